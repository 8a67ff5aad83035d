"""`make hub`: the kit in Jupyter kernels built like the course hub's, one per profile
(requirements-hub-<profile>.txt, utils.environment.PROFILES). Not part of `make test`: each profile is a venv of
several GB and a notebook run of several minutes.

For each profile: build .venv-<profile> with Python 3.12 (once; again when its pins change: tools/venvs.py), then
with that venv's interpreter
  1 notebook   execute CS461_Assignment1.ipynb headless in the short profile, Section 0 filled in, saved after
               every cell (python -m utils.headless, as make demo runs it), with widgets as on the hub (the
               neighbour explorer is a widget, not the static figure nbval draws)
  2 section 7  the notebook handed in: the four files in its submission folder and eval.py's result, passed
  3 eval       python eval.py -i <submission> --demo --json ... on the data the notebook used
  4 grader     the course grader's replica (utils/submission/grader.py) on the submission, which patches
               scikit-learn with Intel's extension when it is installed, as the course's utils.py does; the
               record says whether the extension was active (its "Extension for Scikit-learn* enabled" line)
  5 agree      the replica's four accuracies equal eval.py's to eval.py's printed precision (2 decimals)
  6 hub pins   `pip install --dry-run -r requirements-hub.txt` (what students install) would not replace the
               profile's torch, torchvision, numpy or scikit-learn
Writes benchmarks/results/<profile>-<date>.json (hub-2025-<date>.json; <date>b.json for a second run that day):
versions, each step's result and time, the accuracies, the commit. The executed notebook and everything it wrote
stay in hub_output/<profile>/.

    python tools/hub.py [--python python3.12] [hub-2025] [hub-2026]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.environment import HUB_REQUIREMENTS, PROFILES  # noqa: E402
from utils.notebook_file import cell_source, read_notebook  # noqa: E402
from utils.provenance import RESULTS_DIR, device_description, free_results_path, git_commit  # noqa: E402
from utils.submission import handin  # noqa: E402
from utils.submission.course import DEMO_ENV, SUBMISSION_FILES, SubmissionError  # noqa: E402
from utils.submission.grader import accuracy_differences, run_course_grader  # noqa: E402
from venvs import build_venv, find_python  # noqa: E402  (tools/venvs.py, beside this file)

HUB_PROFILES = {p.name: p for p in PROFILES if p.name.startswith("hub-")}
OUTPUT = ROOT / "hub_output"
# Recorded from each venv (distribution names).
KEY_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-learn-intelex", "daal",
                "safetensors", "matplotlib", "pandas", "seaborn", "umap-learn", "numba", "llvmlite", "ipywidgets",
                "widgetsnbextension", "jupyterlab_widgets", "ipykernel", "ipython", "jupyter_client", "pyzmq",
                "tornado", "nbclient", "nbformat", "nbconvert", "tqdm", "pillow")
# Printed by sklearnex.patch_sklearn() when it patches scikit-learn.
SKLEARNEX_BANNER = "Extension for Scikit-learn* enabled"
# What students' `%pip install --user -r requirements-hub.txt` must leave as the hub has them.
HUB_OWNED = ("torch", "torchvision", "numpy", "scikit-learn")
EXPLORER_CALL = "explorer.neighbour_explorer("
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class StepFailed(Exception):
    """A step's check did not hold; the message says what was expected and what was found."""


class Steps:
    """Runs the steps of one profile in order, each timed; a step that fails is recorded and the ones after it
    that need its result are skipped."""

    def __init__(self):
        self.record: dict[str, dict] = {}

    def run(self, name: str, function, *args):
        start = time.time()
        try:
            value = function(*args)
        except Exception as error:  # noqa: BLE001 - every failure is recorded in the results file
            detail = str(error) if isinstance(error, StepFailed) else traceback.format_exc(limit=-3)
            self.record[name] = {"ok": False, "seconds": round(time.time() - start, 1),
                                 "error": f"{type(error).__name__}: {detail}".strip()[-4000:]}
            print(f"  FAIL {name}: {str(error).strip()[-600:]}", flush=True)
            return None
        self.record[name] = {"ok": True, "seconds": round(time.time() - start, 1)}
        print(f"  ok   {name} ({self.record[name]['seconds']:.0f} s)", flush=True)
        return value

    def skip(self, name: str, why: str) -> None:
        self.record[name] = {"ok": False, "skipped": why}
        print(f"  skip {name}: {why}", flush=True)


def venv_versions(python: Path) -> dict[str, str | None]:
    """Python's version and each KEY_PACKAGES distribution's version in the venv of `python` (None: absent)."""
    code = ("import json, platform\nfrom utils.environment import installed_version\n"
            f"print(json.dumps({{'python': platform.python_version(), "
            f"**{{n: installed_version(n) for n in {KEY_PACKAGES!r}}}}}))")
    done = subprocess.run([str(python), "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run_notebook(python: Path, output: Path) -> dict:
    """Step 1: the notebook in the short profile, headless, under the venv's kernel."""
    if output.exists():
        shutil.rmtree(output)          # only this run's outputs may be checked and recorded
    result_path = output.parent / f"{output.name}-headless.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CS461_")}
    command = [str(python), "-m", "utils.headless", "--output", str(output), "--env", f"{DEMO_ENV}=1",
               "--json", str(result_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3 * 3600)
    (output.parent / f"{output.name}-headless.log").write_text(done.stdout + done.stderr)
    if not result_path.is_file():
        raise StepFailed(f"python -m utils.headless wrote no {result_path.name} (exit status {done.returncode}): "
                         f"{(done.stdout + done.stderr)[-2000:]}")
    result = json.loads(result_path.read_text())
    if not result["ok"]:
        raise StepFailed(f"the notebook stopped: {result['error']}")
    return result


def explorer_kind(notebook: Path) -> str | None:
    """'widget' or 'static figure': what the neighbour explorer's cell showed in the executed notebook."""
    cells = read_notebook(notebook)["cells"]
    cell = next((c for c in cells if c["cell_type"] == "code" and EXPLORER_CALL in cell_source(c)), None)
    if cell is None:
        return None
    return "widget" if any(WIDGET_VIEW in o.get("data", {}) for o in cell.get("outputs", [])) else "static figure"


def section_7(output: Path) -> dict:
    """Step 2: what Section 7 handed in."""
    submission = output / "submission"
    present = {p.name for p in submission.iterdir()} if submission.is_dir() else set()
    missing = [name for name in SUBMISSION_FILES if name not in present]
    if missing:
        raise StepFailed(f"{submission}: expected the four files {list(SUBMISSION_FILES)}, missing {missing}")
    result_path = output / handin.EVAL_RESULT
    if not result_path.is_file():
        raise StepFailed(f"Section 7 wrote no {result_path}: it did not run eval.py")
    result = json.loads(result_path.read_text())
    if not result["ok"]:
        raise StepFailed(f"Section 7's eval.py found failures: {result['summary']} (see {output / handin.EVAL_LOG})")
    return result


def run_eval(python: Path, submission: Path, data_dir: str, out: Path) -> dict:
    """Step 3: eval.py on the submission, in the venv, as Section 7 runs it (utils.submission.handin.run_eval)."""
    log = out.with_suffix(".log")
    log.write_text("")
    try:
        result = handin.run_eval(submission, data_dir, out, log, demo=True, python=python, timeout_s=3600)
    except SubmissionError as error:
        raise StepFailed(str(error)) from None
    if not result["ok"]:
        raise StepFailed(f"eval.py exit status {result['exit_status']}: {result['summary']} (see {log})")
    return result


def run_grader(python: Path, submission: Path, data_dir: str, log: Path, sklearnex: str | None) -> dict:
    """Step 4: the grader replica in the venv; records whether Intel's extension patched scikit-learn."""
    run = run_course_grader(submission, data_dir=data_dir, python=str(python))
    log.write_text(run.stdout + run.stderr)
    active = SKLEARNEX_BANNER in run.stdout + run.stderr
    record = {**run.record(), "sklearnex_installed": sklearnex, "sklearnex_active": active}
    if not run.ok:
        raise StepFailed(f"{run.step_text()} (see {log})")
    if sklearnex and not active:
        raise StepFailed(f"scikit-learn-intelex {sklearnex} is installed but the replica printed no "
                         f"'{SKLEARNEX_BANNER}': its probes ran on plain scikit-learn (see {log})")
    return record


def accuracies_agree(grader: dict, evaluation: dict) -> dict:
    """Step 5: each of the replica's fractions, as a percentage to 2 decimals, equals eval.py's."""
    percent = evaluation["accuracies_percent"]
    differ = accuracy_differences(grader["accuracies_fraction"], percent)
    if differ or not percent:
        backend = evaluation.get("probes_backend") or "an unrecorded scikit-learn"
        why = (f" (the replica's scikit-learn was patched by Intel's extension, eval.py's probes ran on {backend})"
               if differ and grader.get("sklearnex_active") and "Intel's extension" not in backend else "")
        raise StepFailed(f"the replica's accuracies differ from eval.py's: {differ or 'eval.py gave none'}{why}")
    return {}


def hub_requirements(python: Path) -> dict:
    """Step 6: what `pip install -r requirements-hub.txt` would install in this kernel; none of HUB_OWNED."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--dry-run", "--quiet",
               "--report", "-", "-r", str(HUB_REQUIREMENTS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise StepFailed(f"pip cannot resolve {HUB_REQUIREMENTS.name} here: {done.stderr.strip()[-1500:]}")
    report = json.loads(done.stdout)
    would = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
    replaced = {name: version for name, version in would.items() if name in HUB_OWNED}
    if replaced:
        raise StepFailed(f"{HUB_REQUIREMENTS.name} would replace the kernel's own {replaced}: a student's "
                         f"--user install would shadow the hub's builds")
    return {"would_install": would}


def run_profile(name: str, python: str) -> dict:
    profile = HUB_PROFILES[name]
    print(f"== {name} ({profile.pins.name})", flush=True)
    load_before = os.getloadavg()
    steps = Steps()
    interpreter = steps.run("venv", build_venv, ROOT / f".venv-{name}", python, profile.pins)
    record = {"what": f"make hub: the kit in a kernel built like the course hub's, profile {name} "
                      f"({profile.pins.name}): the notebook headless in the short profile (widgets as on the hub), "
                      f"Section 7's hand-in, eval.py --demo, and the course grader's replica with Intel's "
                      f"extension for scikit-learn when installed",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device_description("cpu"), **git_commit(), "profile": name, "pins": profile.pins.name}
    if interpreter is None:
        return {**record, "ok": False, "steps": steps.record}
    versions = venv_versions(interpreter)
    output = OUTPUT / name
    notebook = steps.run("notebook", run_notebook, interpreter, output)
    handed_in = steps.run("section 7", section_7, output) if notebook else steps.skip("section 7", "no notebook run")
    evaluation = grader = None
    if handed_in:
        data_dir = handed_in["data_dir"]
        evaluation = steps.run("eval", run_eval, interpreter, output / "submission", data_dir,
                               output.parent / f"{name}-eval.json")
        grader = steps.run("grader", run_grader, interpreter, output / "submission", data_dir,
                           output.parent / f"{name}-grader.txt", versions.get("scikit-learn-intelex"))
        if evaluation and grader:
            steps.run("agree", accuracies_agree, grader, evaluation)
        else:
            steps.skip("agree", "eval.py or the replica did not give accuracies")
    else:
        for step in ("eval", "grader", "agree"):
            steps.skip(step, "nothing handed in")
    pins = steps.run("hub pins", hub_requirements, interpreter)
    load_after = os.getloadavg()
    executed = output / "CS461_Assignment1.ipynb"
    return {
        **record,
        "ok": all(step.get("ok") for step in steps.record.values()),
        "versions": versions,
        "steps": steps.record,
        "explorer": explorer_kind(executed) if executed.is_file() else None,
        "notebook_slowest_cells_s": sorted(notebook["cells"], key=lambda c: -(c["seconds"] or 0))[:6]
        if notebook else None,
        "section_7_eval_accuracies_percent": handed_in["accuracies_percent"] if handed_in else None,
        "eval_accuracies_percent": evaluation["accuracies_percent"] if evaluation else None,
        "replica": grader,
        "hub_requirements_would_install": pins["would_install"] if pins else None,
        "timing_note": f"load average {load_before[0]:.1f} before and {load_after[0]:.1f} after, on a machine "
                       f"shared with other jobs: the times say where the time goes, not how fast it can be",
        "data": {"kind": "the notebook's embedded default data (utils.synthetic)",
                 "dir": handed_in["data_dir"] if handed_in else None},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="*", default=sorted(HUB_PROFILES),
                        help=f"which profiles (default: all: {', '.join(sorted(HUB_PROFILES))})")
    parser.add_argument("--python", default="python3.12", help="the hub's Python (default: %(default)s)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.profiles if name not in HUB_PROFILES]
    if unknown:
        parser.error(f"unknown profile(s) {unknown}; expected some of {sorted(HUB_PROFILES)}")
    python = find_python(args.python)
    OUTPUT.mkdir(exist_ok=True)
    failed = []
    for name in args.profiles:
        record = run_profile(name, python)
        path = free_results_path(RESULTS_DIR, f"{name}-{record['date'][:10]}")
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name}: {'all steps passed' if record['ok'] else 'FAILED'}; record: {path}", flush=True)
        if not record["ok"]:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
