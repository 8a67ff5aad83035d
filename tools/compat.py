"""`make compat`: the course grader's sequence under older versions than the kit's own (Python 3.10, the oldest
torch 2.x, numpy 1.x; requirements-compat.txt), on the shipped submission.

The grader's Python, torch and safetensors are not known, so models.py must not need anything newer than these.
This builds .venv-compat with the given Python (once, and again when requirements-compat.txt or the Python
changes: tools/venvs.py), then runs utils/submission/grader.py's replica with that interpreter, in a clean
`python -I`: import as `custom_model`, strict load of final_model.safetensors, eval(), the shape check, then
the course's data loading and probes on a small generated data set. The replica's numbers
are compared with the kit's own interpreter's run of the same replica on the same files and data.
Writes benchmarks/results/compat-<python>-torch<version>.json (versions, steps, accuracies, device, commit).

    python tools/compat.py --python python3.10
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.provenance import RESULTS_DIR, provenance  # noqa: E402
from utils.submission.grader import run_course_grader  # noqa: E402
from utils.synthetic import DataSpec, write_dataset  # noqa: E402
from venvs import build_venv, find_python  # noqa: E402  (tools/venvs.py, beside this file)

VENV = ROOT / ".venv-compat"
REQUIREMENTS = ROOT / "requirements-compat.txt"
# Small enough for a few probes in seconds on a CPU with the shipped ResNet-18.
DATA = DataSpec(id_classes=6, train_per_class=15, val_per_class=8, ood_classes=6, ood_per_class=15)


def shipped_submission(folder: Path) -> Path:
    """The four shipped files (the notebook as committed: the grader's sequence does not read it)."""
    for name in ("models.py", "final_model.safetensors", "report.md", "CS461_Assignment1.ipynb"):
        shutil.copyfile(ROOT / name, folder / name)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="python3.10", help="the older interpreter (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    interpreter = build_venv(VENV, find_python(args.python), REQUIREMENTS)
    with tempfile.TemporaryDirectory(prefix="cs461_compat_") as tmp:
        (Path(tmp) / "submission").mkdir()
        submission = shipped_submission(Path(tmp) / "submission")
        data = Path(tmp) / "data"
        write_dataset(data, DATA, seed=5, progress=False)
        old = run_course_grader(submission, data_dir=data, python=str(interpreter))
        new = run_course_grader(submission, data_dir=data)
    print(old.stdout + old.stderr[-3000:] if not old.ok else old.stdout, end="")
    agree = old.ok and new.ok and all(f"{old.accuracies[k]:.4f}" == f"{new.accuracies[k]:.4f}"
                                      for k in old.accuracies)
    record = {
        "what": "the course grader's sequence (utils/submission/grader.py's replica) on the shipped submission, "
                "in a clean `python -I`, under older versions (requirements-compat.txt) and under the kit's own",
        **provenance("cpu"),
        "data": {"kind": "utils.synthetic", **DATA.__dict__, "seed": 5},
        "older": old.record(),
        "kit": new.record(),
        "accuracies_agree_to_4_decimals": agree,
    }
    versions = old.versions or {}
    out = args.out or RESULTS_DIR / (
        f"compat-python{versions.get('python', 'unknown')}-torch{versions.get('torch', 'unknown')}.json")
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nolder versions: {', '.join(f'{k} {v}' for k, v in versions.items())}")
    print(f"steps passed: {', '.join(old.steps_passed) or 'none'}" + ("" if old.ok else f"; {old.step_text()}"))
    print(f"accuracies agree with the kit's interpreter: {agree}\nrecord: {out}")
    return 0 if old.ok and agree else 1


if __name__ == "__main__":
    sys.exit(main())
