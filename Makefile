# Two commands do everything on a fresh machine with CPython 3.11:
#   make demo   run the notebook end to end on the embedded default data (short CPU profile)
#   make test   run the test suite (includes the notebook under nbval)
#   make compat the course grader's sequence under older versions (Python 3.10, torch 2.0): not part of make test
#   make hub    the notebook, eval.py and the grader's replica in kernels built like the course hub's
#               (requirements-hub-2025.txt, requirements-hub-2026.txt; PROFILE=hub-2025 for one): not part of make test
# Both create ./.venv and install the pinned requirements the first time; later runs reuse it.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test compat hub venv data clean-data clean

venv: $(STAMP)

# Reinstalls only when a requirements file changed (the stamp is older than it).
$(STAMP): requirements.txt constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; run: make PYTHON=/path/to/python3.11 ..."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -c constraints.txt
	@touch $(STAMP)

data: $(STAMP)
	$(PY) -m utils.synthetic

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest

# An older interpreter: python3.10 on the PATH (or pyenv's), else say COMPAT_PYTHON=/path/to/python3.10.
COMPAT_PYTHON ?= python3.10
compat: $(STAMP)
	$(PY) tools/compat.py --python $(COMPAT_PYTHON)

# Python 3.12 as on the hub: python3.12 on the PATH (or pyenv's), else say HUB_PYTHON=/path/to/python3.12.
HUB_PYTHON ?= python3.12
PROFILE ?=
hub: $(STAMP)
	$(PY) tools/hub.py --python $(HUB_PYTHON) $(PROFILE)

clean-data:
	rm -rf cs461_assignment1_data

clean:
	rm -rf $(VENV) .venv-compat .venv-hub-* hub_output cs461_assignment1_data checkpoints figures demo_output short_run .pytest_cache
