"""The course grader's own sequence, run on a submission in a fresh interpreter: what eval.py's model checks
rest on, what the tests compare eval.py with, and what `make compat` runs under older versions.

`run_course_grader(folder)` lays out a temporary folder holding only copies of the submission's files, the grader
replica's eval.py and the stand-in utils.py (both in grader_replica/, written from the course's steps), then
starts `python -I eval.py` there: no PYTHONPATH, no user site, nothing of this project importable, models.py
imported as `custom_model` and never put in sys.modules, exactly as the grader does. It returns a GraderRun:
which steps passed, the step that failed with the grader's own error text, the accuracies (fractions) when the
probes ran, and what the replica printed.

    run = run_course_grader(folder, first_steps=True)     # import, build, strict load, eval(), shape check
    run = run_course_grader(folder, data_dir=data)        # every step and the four probes
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from utils.submission.course import SUBMISSION_FILES

REPLICA_DIR = Path(__file__).resolve().with_name("grader_replica")
REPLICA_FILES = ("eval.py", "utils.py")

# Each step of the replica, as eval.py's FAIL lines name it (numbered as the course's grader runs them).
GRADER_STEPS = {
    "files": "grader step 1 (the four files)",
    "import": "grader step 2 (import models.py as custom_model, not in sys.modules)",
    "build": "grader step 3 (ImageEncoder() with no arguments)",
    "load": "grader step 3 (safetensors.torch.load_model, strict)",
    "shape check": "grader step 4 (get_features(torch.randn(1, 3, 64, 64)).shape == (1, 1000) under no_grad)",
    "data": "grader step 5 (the data files)",
    "probes": "grader step 6 (the probes)",
}


@dataclass
class GraderRun:
    """What one run of the grader replica did. failed_step: a GRADER_STEPS key, or "environment" when the replica
    could not start (its own imports failed, or it timed out); None when every step it ran passed."""
    steps_passed: list[str] = field(default_factory=list)
    failed_step: str | None = None
    error: str | None = None
    traceback: str | None = None
    accuracies: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    returncode: int = 0

    @property
    def ok(self) -> bool:
        return self.failed_step is None and self.returncode == 0

    def step_text(self) -> str:
        """"grader step 2 (...) fails with AttributeError: ...", for a FAIL line."""
        where = GRADER_STEPS.get(self.failed_step, f"the grader replica ({self.failed_step})")
        return f"{where} fails with {self.error}"

    def record(self) -> dict:
        """What a results file keeps of the run (make demo, make hub, make compat)."""
        return {"ok": self.ok, "steps_passed": self.steps_passed, "failed_step": self.failed_step,
                "error": self.error, "accuracies_fraction": self.accuracies, "versions": self.versions}


def accuracy_differences(fractions: dict[str, float], percent: dict[str, float]) -> dict[str, dict]:
    """Where the replica's accuracies (fractions, as the course prints them) and eval.py's (percentages) differ at
    eval.py's printed precision, two decimals of a percentage: {key: {"eval_percent", "replica_percent"}}, empty
    when they agree (also when eval.py measured nothing: the callers say so). A key eval.py measured and the replica
    did not differs."""
    differ = {}
    for key, value in percent.items():
        replica = fractions.get(key, float("nan")) * 100
        if f"{replica:.2f}" != f"{value:.2f}":
            differ[key] = {"eval_percent": value, "replica_percent": round(replica, 4)}
    return differ


def run_course_grader(folder: str | Path, *, data_dir: str | Path | None = None, first_steps: bool = False,
                      python: str = sys.executable, timeout_s: float = 1800,
                      files: dict[str, Path] | None = None) -> GraderRun:
    """The grader replica on the submission `folder` (copies of its files: the grader gets nothing else).

    data_dir: the npz folder for the probes (required unless first_steps). first_steps: import, build, strict
    load, eval() and the shape check only. python: the interpreter to run it with (`make compat`: an older one).
    files: {file name: path} to use instead of folder/<name> (eval.py passes the files it checked)."""
    if not first_steps and data_dir is None:
        raise ValueError("run_course_grader: the probes need data_dir (or pass first_steps=True)")
    folder = Path(folder)
    if os.sep in python:      # a path relative to here: the replica runs in another folder (not resolved: a
        python = str(Path(python).absolute())   # venv's python is a symlink that must stay inside the venv)
    sources = {name: folder / name for name in SUBMISSION_FILES}
    sources.update(files or {})
    with tempfile.TemporaryDirectory(prefix="cs461_grader_") as tmp:
        work = Path(tmp)
        for name in REPLICA_FILES:
            shutil.copyfile(REPLICA_DIR / name, work / name)
        for name, path in sources.items():
            if Path(path).is_file():
                shutil.copyfile(path, work / name)
        result_path = work / "grader_result.json"
        command = [python, "-I", "eval.py", "-i", str(work), "--result", str(result_path)]
        command += ["--first-steps"] if first_steps else ["-d", str(Path(data_dir).resolve())]
        try:
            process = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            return GraderRun(failed_step="environment", returncode=-1,
                             error=f"a timeout: the grader's sequence took more than {timeout_s:.0f} s",
                             stdout=_text(error.stdout), stderr=_text(error.stderr))
        record = json.loads(result_path.read_text()) if result_path.is_file() else None
    run = GraderRun(stdout=process.stdout, stderr=process.stderr, returncode=process.returncode)
    if record is None:        # the replica died before its first step: its own imports (torch, utils.py, ...)
        lines = [line for line in process.stderr.strip().splitlines() if line.strip()]
        run.failed_step, run.traceback = "environment", process.stderr
        run.error = lines[-1] if lines else f"exit status {process.returncode}"
        return run
    for key in ("steps_passed", "failed_step", "error", "traceback", "accuracies", "versions"):
        setattr(run, key, record[key])
    if run.failed_step is None and process.returncode != 0:
        run.failed_step, run.error = "environment", f"exit status {process.returncode} after every step passed"
    return run


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def main(argv: list[str] | None = None) -> int:
    """`python -m utils.submission.grader -i FOLDER -d DATA`: the grader replica, with everything it printed."""
    import argparse

    parser = argparse.ArgumentParser(description="Run the course grader's own sequence (a replica, in a fresh "
                                     "`python -I`) on a submission folder and show everything it prints.")
    parser.add_argument("--submission-folder", "-i", required=True, help="folder holding the four files")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--data-dir", "-d", help="folder holding train.npz, val.npz and ood.npz: every step and the "
                     "four probes")
    how.add_argument("--first-steps", action="store_true", help="import, build, strict load, eval() and the "
                     "shape check only")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run it with (default: this one)")
    parser.add_argument("--json", metavar="PATH", help="also write the run (steps, error, accuracies) as JSON")
    args = parser.parse_args(argv)
    run = run_course_grader(args.submission_folder, data_dir=args.data_dir, first_steps=args.first_steps,
                            python=args.python)
    print(run.stdout, end="")
    print(run.stderr, end="", file=sys.stderr)
    versions = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    print(f"\nsteps passed: {', '.join(run.steps_passed) or 'none'}" + (f" ({versions})" if versions else ""))
    if not run.ok:
        print(f"FAILED: {run.step_text()}")
    if args.json:
        Path(args.json).write_text(json.dumps(run.__dict__, indent=1) + "\n")
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
