"""Root conftest: the notebook under nbval runs in the short CPU profile, headless, writing into a temporary
folder that is removed when the test session ends (the kernel nbval starts inherits this environment). It trains
for 15 s instead of the profile's 16 epochs (about 100 s on a 2-core CPU): nbval tests that every cell runs, and
`make demo` shows what the full short profile learns.

The suite runs in one worker per core (pytest-xdist, `-n auto` in pytest.ini; each test file stays in one worker, so
the notebook's cells run in one kernel): each worker, and every kernel and program it starts, then uses one thread,
so that the workers do not fight over the cores. `pytest -n 0` runs everything in this process."""
import atexit
import os
import shutil
import tempfile

if os.environ.get("PYTEST_XDIST_WORKER"):
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

os.environ.setdefault("CS461_PROFILE", "short")
os.environ.setdefault("CS461_STATIC_WIDGETS", "1")
os.environ.setdefault("CS461_TIME_BUDGET_MIN", "0.25")
if "CS461_OUTPUT_DIR" not in os.environ:
    _output_dir = tempfile.mkdtemp(prefix="cs461_nbval_")
    atexit.register(shutil.rmtree, _output_dir, ignore_errors=True)
    os.environ["CS461_OUTPUT_DIR"] = _output_dir
os.environ.setdefault("CS461_SUBMISSION_DIR", os.path.join(os.environ["CS461_OUTPUT_DIR"], "submission"))
