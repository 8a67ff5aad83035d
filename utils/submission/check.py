"""`check_submission(folder)`: the whole pre-submission check, in the order the grader meets things
(the folder and its files, models.py and the weights, the notebook, report.md, the data, then the protocol)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from utils.device import pick_device
from utils.submission.course import (GRADER_BATCH_SIZE, MODELS_FILE, NOTEBOOK_FILE, REPORT_FILE, SUBMISSION_FILES,
                                     WEIGHTS_FILE, expand_path)
from utils.submission.data_checks import check_data
from utils.submission.model_checks import check_model
from utils.submission.notebook_checks import check_notebook
from utils.submission.protocol import run_protocol
from utils.submission.report import Report
from utils.submission.training_checks import (TRAINING_DATA_CHECK, check_network_size, check_training_data,
                                             read_metadata)
from utils.submission.words import check_report


def check_submission(folder: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                     files: dict[str, str] | None = None, fast: bool = False, quick: bool = False,
                     batch_size: int = GRADER_BATCH_SIZE, progress: bool = True, echo: bool = True,
                     demo: bool = False) -> Report:
    """Check a submission folder the way the grader uses it, then run the grader's protocol on it.

    data_dir: folder with the npz files (None: utils.data.locate_data_dir's order, the notebook's).
    files: {"train"/"val"/"ood": file name} overrides. fast: torch probes instead of scikit-learn. quick: structure checks only (data files found but not loaded, no probes).
    echo: print each check, and each probe's accuracy and time, as they come. progress: tqdm bars.
    demo: accept weights trained on the kit's generated data (`make demo`; a WARN instead of a FAIL).
    Returns the Report; `report.ok` is True when no check failed.
    """
    folder = expand_path(folder)
    report = Report(folder=str(folder), mode="quick" if quick else ("fast" if fast else "exact"), echo=echo)
    device = pick_device("auto")           # as the grader: the GPU when there is one
    report.device = str(device)
    start = time.perf_counter()

    if not check_folder(report, folder):
        report.probes_skipped = "the submission folder does not exist"
        return report
    present = check_files(report, folder)

    model = None
    weights = folder / WEIGHTS_FILE if WEIGHTS_FILE in present else None
    if MODELS_FILE in present:
        model = check_model(report, folder / MODELS_FILE, weights, device)
    metadata = read_metadata(weights)
    if metadata is not None:            # what the weights say about their run
        report.weights_record = {k: metadata[k] for k in WEIGHTS_RECORD if k in metadata}
        check_training_data(report, metadata, WEIGHTS_FILE, demo=demo)
        check_network_size(report, metadata, WEIGHTS_FILE)
    if NOTEBOOK_FILE in present:
        check_notebook(report, folder / NOTEBOOK_FILE, fingerprint=(metadata or {}).get("fingerprint"))
    if REPORT_FILE in present:
        check_report(report, folder / REPORT_FILE)
    splits = check_data(report, data_dir, files, load=not quick)
    report.timings["structure checks"] = time.perf_counter() - start

    if quick:
        report.probes_skipped = "--quick: structure checks only"
        report.note("Probes not run (--quick: structure checks only).")
        return report
    blocking = [c for c in report.failures if blocks_probes(c)]
    if blocking or model is None or splits is None:
        count = len(blocking) or len(report.failures)
        report.probes_skipped = (f"{count} structural check{'s' if count != 1 else ''} failed; the accuracies "
                                 f"would be meaningless until they are fixed")
        report.note(f"Probes not run: {report.probes_skipped}.")
        return report
    run_protocol(report, model, splits, fast=fast, batch_size=batch_size, progress=progress)
    return report


# The weights' metadata kept in the result (eval_result.json): the report draft and Section 7 read it.
WEIGHTS_RECORD = ("arch", "loss", "fingerprint", "step", "trained_on", "train_data", "train_images")


# Failures that leave the accuracies meaningful (the notebook, the report, what the weights were trained on): the
# probes still run, so that the student sees the numbers while fixing them.
ACCURACY_INDEPENDENT = ("notebook", "report.md", f"file {NOTEBOOK_FILE}", f"file {REPORT_FILE}", TRAINING_DATA_CHECK)


def blocks_probes(check) -> bool:
    return not check.name.startswith(ACCURACY_INDEPENDENT)


# The folder and its files

def check_folder(report: Report, folder: Path) -> bool:
    if folder.is_dir():
        report.passed("submission folder", str(folder))
        return True
    what = "is a file, not a folder" if folder.exists() else "does not exist"
    report.failed("submission folder", f"{folder} {what}; expected a folder holding {', '.join(SUBMISSION_FILES)}",
                  "create it and copy the four files into it (the notebook's last section does this), or pass "
                  "the right folder with --submission-folder/-i")
    return False


def check_files(report: Report, folder: Path) -> set[str]:
    """One check per required file; returns the names of those present."""
    present = set()
    for name in SUBMISSION_FILES:
        path = folder / name
        if path.is_file() and path.stat().st_size > 0:
            present.add(name)
            report.passed(f"file {name}", f"{path.stat().st_size:,} bytes")
        elif path.is_file():
            report.failed(f"file {name}", f"{path} is empty (0 bytes)", f"copy {name} into the folder again")
        else:
            others = sorted(p.name for p in folder.iterdir() if p.name.lower() == name.lower() or
                            p.suffix == Path(name).suffix)
            found = f"; files with that extension there: {', '.join(others)}" if others else ""
            report.failed(f"file {name}", f"{path} is missing{found}",
                          f"copy {name} into {folder} under exactly this name (the grader looks for it)")
    return present
