"""Pre-submission check for CS-461 Assignment 1: what the grader will trip on, and the numbers it will compute.

    python eval.py                        # ~/cs461_assignment1_submission, the course's data, exact probes
    python eval.py -i path/to/submission -d path/to/data
    python eval.py --quick                # structure checks only (seconds): files, models.py, weights, ...
    python eval.py --fast                 # the same protocol with torch probes (GPU when available)
    python eval.py --json result.json     # also write a machine-readable result

Every check prints one line, "PASS name", "WARN name: ..." or "FAIL name: what is wrong — how to fix it".
The grader's own first steps run for real, in a fresh `python -I` on copies of the submission's files
(utils/submission/grader.py): import models.py as `custom_model` (never in sys.modules), `ImageEncoder()`,
strict `load_model`, `eval()`, the shape check. Then, when every structural check passed, the grader's protocol
runs: raw get_features outputs of ToTensor
images (batch 64), k-NN (k=5) and logistic-regression probes, in-distribution (fit on train, scored on val)
and out-of-distribution (fit on 80% of ood, scored on the other 20%). Missing data is a failure, never
replaced by random data.

Exit status: 0 when every check passed (warnings allowed), 1 otherwise. The command line is compatible with the
course's eval.py (--submission-folder/-i, --data-dir/-d, --train-file, --val-file, --ood-file).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# `python /anywhere/eval.py` must find this project's utils package, wherever it is run from.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.data import data_dir_help  # noqa: E402
from utils.submission import (DEFAULT_SUBMISSION_DIR, GRADER_BATCH_SIZE, accuracy_lines, check_submission,  # noqa: E402
                              expand_path)
from utils.submission.course import DEMO_FLAG  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Check a CS-461 Assignment 1 submission the way the grader "
                                     "uses it, then compute its probe accuracies.")
    parser.add_argument("--submission-folder", "-i", default=DEFAULT_SUBMISSION_DIR,
                        help="folder holding models.py, final_model.safetensors, CS461_Assignment1.ipynb and "
                             "report.md (default: %(default)s; ~ and $HOME are expanded)")
    parser.add_argument("--data-dir", "-d", default=None,
                        help=f"folder holding the npz files (default, the notebook's order: {data_dir_help()})")
    parser.add_argument("--train-file", default="train.npz", help="training split file name (default: %(default)s)")
    parser.add_argument("--val-file", default="val.npz", help="validation split file name (default: %(default)s)")
    parser.add_argument("--ood-file", default="ood.npz", help="OOD split file name (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=GRADER_BATCH_SIZE,
                        help="feature-extraction batch size (default: %(default)s, as the grader)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true",
                      help="torch probes (GPU when available) instead of scikit-learn; same protocol")
    mode.add_argument("--quick", action="store_true", help="structure checks only: no data loading, no probes")
    parser.add_argument("--json", metavar="PATH", nargs="?", const="-", default=None,
                        help="also write the result as JSON to PATH (to standard output when no PATH is given)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(DEMO_FLAG, action="store_true",
                        help="a demo: accept weights trained on the kit's generated data (make demo passes it)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    return args


def print_results(report) -> None:
    """The four accuracies (percent) and the timings."""
    lines = accuracy_lines(report.accuracies)
    if lines:
        print(f"\nAccuracies ({report.backend}; features on {report.device}):")
        print("\n".join(lines))
    if report.timings:
        print("Timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report.timings.items()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = expand_path(args.submission_folder)
    mode = "quick" if args.quick else ("fast" if args.fast else "exact")
    print(f"Checking {folder} (mode: {mode})")
    report = check_submission(folder, data_dir=args.data_dir,
                              files={"train": args.train_file, "val": args.val_file, "ood": args.ood_file},
                              fast=args.fast, quick=args.quick, batch_size=args.batch_size,
                              progress=not args.no_progress, demo=args.demo)
    print_results(report)
    print()
    print(report.summary())
    if not report.ok:
        print("Fix the FAIL lines above and run `python eval.py` again before submitting.")
    if args.json == "-":
        print(json.dumps(report.as_dict(), indent=2))
    elif args.json:
        path = expand_path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"Result written to {path}")
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main())
