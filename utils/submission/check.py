"""`check_submission(folder)`: the whole pre-submission check, in the order the grader meets things (the folder
and its files, models.py and the weights, what the weights record of their run, the notebook, report.md, the
data), then the grader's protocol on the model (utils.probes.evaluate_encoder, the kit's one encode-and-probe).

Tests: tests/test_eval.py, tests/test_grader.py.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from utils import probes
from utils.checkpoint import CheckpointError, weights_metadata
from utils.data import (COURSE_TRAIN_CLASSES, COURSE_TRAIN_PER_CLASS, COURSE_VAL_PER_CLASS, DATA_ORIGINS,
                        HUB_DATA_DIR, SPLIT_FILES, DataError, find_split_file, is_course_shaped, load_npz,
                        locate_data_dir, ood_split, places_tried)
from utils.device import pick_device
from utils.submission.course import (CPU_SIZED_ARCHS, DEMO_FLAG, DRAFT_PLACES, FILL_IN_MARKER, GRADER_BATCH_SIZE,
                                     LARGE_TRAIN_FOR_CPU, MAX_REPORT_WORDS, MODELS_FILE, NOTEBOOK_FILE,
                                     REFERENCE_REPORT_MARK, REPORT_FILE, SHORT_REPORT_WORDS, SUBMISSION_FILES,
                                     WEIGHTS_FILE, Report, expand_path, format_percent)
from utils.submission.model_checks import check_model
from utils.submission.notebook_checks import check_notebook

TRAINING_DATA_CHECK = "weights trained on the course's data"
# The weights' metadata kept in the result (eval_result.json): the report draft and Section 7 read it.
WEIGHTS_RECORD = ("arch", "loss", "fingerprint", "step", "trained_on", "train_data", "train_images", "train_classes",
                  "train_per_class", "val_images", "val_classes_in_train", "kit_reference")
# Failures that leave the accuracies meaningful (the notebook, the report, what the weights were trained on): the
# probes still run, so that the student sees the numbers while fixing them.
ACCURACY_INDEPENDENT = ("notebook", "report.md", f"file {NOTEBOOK_FILE}", f"file {REPORT_FILE}", TRAINING_DATA_CHECK)


def check_submission(folder: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                     files: dict[str, str] | None = None, fast: bool = False, quick: bool = False,
                     batch_size: int = GRADER_BATCH_SIZE, progress: bool = True, echo: bool = True,
                     demo: bool = False) -> Report:
    """Check a submission folder the way the grader uses it, then run the grader's protocol on it.

    data_dir: folder with the npz files (None: utils.data.locate_data_dir's order, the notebook's). files:
    {"train"/"val"/"ood": file name} overrides. fast: torch probes instead of scikit-learn. quick: structure
    checks only (data files found but not loaded, no probes). echo: print each check as it comes. progress:
    progress bars. demo: a demo of the kit, not a submission (`make demo`): weights trained on other data than the
    course's, and the report draft left as it is, are warnings instead of failures.
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
    weights = folder / WEIGHTS_FILE if WEIGHTS_FILE in present else None
    model = check_model(report, folder / MODELS_FILE, weights, device) if MODELS_FILE in present else None
    try:
        metadata = weights_metadata(weights) if weights is not None else None
    except CheckpointError:          # an unreadable file: the model checks said so
        metadata = None
    if metadata is not None:
        report.weights_record = {k: metadata[k] for k in WEIGHTS_RECORD if k in metadata}
        check_training_record(report, metadata, demo=demo)
    if NOTEBOOK_FILE in present:
        check_notebook(report, folder / NOTEBOOK_FILE, fingerprint=(metadata or {}).get("fingerprint"))
    if REPORT_FILE in present:
        check_report(report, folder / REPORT_FILE, demo=demo)
    splits = check_data(report, data_dir, files, load=not quick)
    report.timings["structure checks"] = time.perf_counter() - start

    if quick:
        report.probes_skipped = "--quick: structure checks only"
        report.note("Probes not run (--quick: structure checks only).")
        return report
    blocking = [c for c in report.failures if not c.name.startswith(ACCURACY_INDEPENDENT)]
    if blocking or model is None or splits is None:
        count = len(blocking) or len(report.failures)
        report.probes_skipped = (f"{count} structural check{'s' if count != 1 else ''} failed; the accuracies "
                                 f"would be meaningless until they are fixed")
        report.note(f"Probes not run: {report.probes_skipped}.")
        return report
    run_protocol(report, model, splits, fast=fast, batch_size=batch_size, progress=progress)
    return report


# ----------------------------------------------------------------------------------------------------------
# The folder and its files
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# What the weights record of their run (utils/train.py writes it): the course's data, the graded network
# ----------------------------------------------------------------------------------------------------------

def check_training_record(report: Report, metadata: dict[str, str], *, demo: bool) -> None:
    """FAIL for the kit's reference weights, and for weights trained on anything but the course's data set (its
    shape, recorded at export: utils.data.training_data_record), unless this is a demo; WARN when the file says
    nothing of its training set (it was not exported by the kit's training run). A loud WARN for the kit's
    CPU-sized networks."""
    origin = metadata.get("trained_on")
    counts = (f" ({metadata.get('train_images', '?')} training images of {metadata.get('train_classes', '?')} "
              f"classes, {metadata.get('train_per_class', '?')} per class; {metadata.get('val_images', '?')} "
              f"validation images)")
    if "kit_reference" in metadata:
        report.failed(TRAINING_DATA_CHECK, f"{WEIGHTS_FILE} is the kit's reference ({metadata['kit_reference']}), "
                      f"not a submission: the course grades weights you trained on its data",
                      "run the notebook on the course's data, then hand in with its Section 7, which copies the "
                      "weights of your own run")
    elif origin is None:
        report.warned(TRAINING_DATA_CHECK, f"{WEIGHTS_FILE} does not record what it was trained on (it was not "
                      f"exported by the kit's training run)", "make sure it was trained on the course's data")
    elif origin == "course" and is_course_shaped(metadata):
        report.passed(TRAINING_DATA_CHECK, f"trained on {DATA_ORIGINS['course']}{counts}")
    elif demo:
        report.warned(TRAINING_DATA_CHECK, f"{WEIGHTS_FILE} was trained on {DATA_ORIGINS.get(origin, origin)}"
                      f"{counts}; accepted because this is a demo ({DEMO_FLAG})", "")
    else:
        where = f", {metadata['train_data']}" if "train_data" in metadata else ""
        report.failed(TRAINING_DATA_CHECK, f"{WEIGHTS_FILE} was trained on {DATA_ORIGINS.get(origin, origin)}"
                      f"{counts[:-1]}{where}); the course's data set has {COURSE_TRAIN_CLASSES} classes of "
                      f"{COURSE_TRAIN_PER_CLASS} training images and {COURSE_VAL_PER_CLASS} validation images of "
                      f"each, and the grader scores photos of classes the model never saw",
                      f"set DATA_DIR in the notebook's settings cell to the course's data (the hub's {HUB_DATA_DIR}, "
                      f"or your copy of all of it), run it again in the full profile on a GPU, and hand in those "
                      f"weights")
    arch = metadata.get("arch")
    if arch in CPU_SIZED_ARCHS:
        report.warned("network size", f"{WEIGHTS_FILE} is the {arch!r} network, sized for a CPU demo, not the "
                      f"graded ResNet-18", "train in the notebook's full profile on a GPU (CS461_PROFILE=full: "
                      "arch resnet18_s2) and hand in those weights")
    elif arch:
        report.passed("network size", f"arch {arch!r}")


# ----------------------------------------------------------------------------------------------------------
# report.md: its words (counted two ways, since a TA may count either), and that it is the student's own
# ----------------------------------------------------------------------------------------------------------

def _drop_fenced_code(text: str) -> str:
    """Text without fenced code blocks (``` or ~~~, closed by a fence of the same kind at least as long; an
    unclosed fence runs to the end, as in CommonMark)."""
    kept, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None:
            opening = re.match(r"(`{3,}|~{3,})", stripped)
            if opening and len(line) - len(stripped) <= 3:
                fence = opening.group(1)
                continue
            kept.append(line)
        elif stripped.startswith(fence) and not stripped.rstrip().strip(fence[0]):
            fence = None
    return "\n".join(kept)


def word_count(markdown_text: str) -> int:
    """Words of a markdown text as a reader counts them: fenced code blocks and HTML comments excluded, link
    URLs, HTML tags, list numbers and markdown punctuation (#, *, |, >, ---) not counted; a word is a
    whitespace-separated token holding at least one letter or digit ("self-supervised" and "36.1%" are one
    word each, a lone "—" is none)."""
    text = re.sub(r"<!--.*?(-->|\Z)", " ", markdown_text, flags=re.DOTALL)
    text = _drop_fenced_code(text)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r" \1 ", text)               # images: keep the alt text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r" \1 ", text)                # links: keep the text, drop the URL
    text = re.sub(r"^\s{0,3}\[[^\]]+\]:\s*\S+.*$", " ", text, flags=re.MULTILINE)  # reference definitions
    text = re.sub(r"\[([^\]]*)\]\[[^\]]*\]", r" \1 ", text)               # reference links
    text = re.sub(r"<(https?://|mailto:)[^>]*>", " ", text)               # autolinks
    text = re.sub(r"</?[A-Za-z][^<>]*>", " ", text)                       # HTML tags
    text = re.sub(r"^\s*\d+[.)](?=\s)", " ", text, flags=re.MULTILINE)    # ordered-list numbers
    text = text.replace("|", " ")                                         # table cells
    return sum(1 for token in text.split() if re.search(r"[^\W_]", token))


def wc_word_count(text: str) -> int:
    """Words as `wc -w` counts them: whitespace-separated tokens, whatever they hold."""
    return len(text.split())


def check_report(report: Report, path: Path, *, demo: bool = False) -> None:
    """At most 500 words by both counts; not the kit's reference report; not the kit's draft with every marked
    place left (a FAIL, a WARN in a demo), and a WARN for each marked place still left."""
    text = path.read_text(encoding="utf-8", errors="replace")
    words, wc_words = word_count(text), wc_word_count(text)
    counts = (f"{words} words counted as a reader does (without code blocks, HTML comments, link URLs and "
              f"markdown syntax), {wc_words} by `wc -w`")
    name = "report.md words"
    if max(words, wc_words) > MAX_REPORT_WORDS:
        report.failed(name, f"{counts}; expected at most {MAX_REPORT_WORDS} by both counts (a TA may use either)",
                      f"shorten it by {max(words, wc_words) - MAX_REPORT_WORDS} words")
    elif words < SHORT_REPORT_WORDS:
        report.warned(name, f"only {words} words; the report should discuss your OOD results",
                      f"write the discussion (at most {MAX_REPORT_WORDS} words)")
    else:
        report.passed(name, f"{counts} (limit {MAX_REPORT_WORDS} by both)")
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    marked = text.count(FILL_IN_MARKER)
    fix = ("write your discussion of the OOD results in my_report.md (Section 7 drafted it from your run's numbers), "
           "then run Section 7 again: it hands my_report.md in as report.md")
    if REFERENCE_REPORT_MARK in first_line:
        report.failed("report.md is yours", f"{path.name} is the kit's reference report (its first line says so), "
                      f"not yours: the course grades your own discussion of your OOD results", fix)
    elif marked >= DRAFT_PLACES or (marked and words < SHORT_REPORT_WORDS):
        (report.warned if demo else report.failed)(
            "report.md is yours", f"{path.name} is the kit's draft with every place marked {FILL_IN_MARKER}: ...>> "
            f"left ({marked}): none of it is your discussion yet" + ("; accepted in a demo" if demo else ""), fix)
    elif marked:
        report.warned("report.md written", f"{path.name} still has {marked} place{'s' if marked != 1 else ''} "
                      f"marked {FILL_IN_MARKER}: ...>> (the kit's draft): the discussion of your OOD results is "
                      f"yours to write", "replace every marked place with your own text, then hand it in again")


# ----------------------------------------------------------------------------------------------------------
# The data files
# ----------------------------------------------------------------------------------------------------------

def check_data(report: Report, data_dir, files: dict[str, str] | None, *, load: bool) -> dict | None:
    """The three split files: found (always) and valid (when `load`). Returns the loaded splits, or None."""
    filenames = {**SPLIT_FILES, **(files or {})}
    try:
        directory, source = locate_data_dir(data_dir, explicit_name="--data-dir")
    except DataError as error:
        report.failed("data directory", str(error), "pass --data-dir with the folder holding "
                      f"{', '.join(filenames.values())} (on the course hub: {HUB_DATA_DIR})")
        return None
    report.data_dir = str(directory.resolve())
    if not directory.is_dir():
        report.failed("data directory", f"{directory.resolve()} [{source}] does not exist; places tried:\n"
                      f"{places_tried(None, explicit_name='--data-dir')}",
                      f"pass --data-dir with the folder holding {', '.join(filenames.values())}, or run "
                      f"`python -m utils.synthetic` to generate the embedded default data set there")
        return None
    report.passed("data directory", f"{directory.resolve()} [{source}]")
    splits, all_ok = {}, True
    for split, filename in filenames.items():
        try:
            path = find_split_file(split, directory, filename)
        except DataError as error:
            report.failed(f"data {split}", str(error))
            all_ok = False
            continue
        if not load:
            report.passed(f"data {split}", f"{path} found (not loaded: --quick)")
            continue
        try:
            splits[split] = load_npz(path)
        except DataError as error:
            report.failed(f"data {split}", str(error), "regenerate or re-copy the file in the course format")
            all_ok = False
            continue
        report.passed(f"data {split}", f"{path}: {len(splits[split]):,} images, {len(splits[split].classes)} classes")
    if not (load and all_ok):
        return None
    train = splits["train"].classes
    shared = np.intersect1d(train, splits["ood"].classes)
    if len(shared):
        report.warned("data classes", f"{len(shared)} of the ood classes are also training classes (e.g. "
                      f"{shared[:5].tolist()}); expected unseen classes", "check that ood.npz is the course's file")
    unseen = np.setdiff1d(splits["val"].classes, train)
    if len(unseen):
        report.warned("data classes", f"{len(unseen)} val classes never occur in train (e.g. {unseen[:5].tolist()})"
                      f"; the in-distribution probes cannot predict them", "check that val.npz matches train.npz")
    return splits


# ----------------------------------------------------------------------------------------------------------
# The grader's protocol
# ----------------------------------------------------------------------------------------------------------

def run_protocol(report: Report, model, splits: dict, *, fast: bool, batch_size: int, progress: bool) -> None:
    """Raw get_features of ToTensor images (batch `batch_size`), then the four probes (probes.evaluate_encoder), a
    line each with its accuracy and time as it finishes (the exact linear probe can take minutes: the student sees
    which step runs). Fills report.accuracies (percent) and report.timings."""
    device = next(model.parameters()).device
    fit_n, score_n = (len(ix) for ix in ood_split(len(splits["ood"])))
    report.backend = "torch (--fast)" if fast else f"{probes.sklearn_backend()}, exactly as the grader"
    how = report.backend
    running = {"label": "first"}

    def encoding(split: str, n: int) -> None:
        report.note(f"Extracting {split} features: {n:,} images, batch {batch_size}, {device}")

    def show(step: dict) -> None:
        running["label"] = step["label"]
        if step["event"] == "start":
            if step["key"] == "id_knn":
                report.note(f"Probes ({how}): k-NN (k=5) and logistic regression (C=1, max_iter=1000). ID: fit on "
                            f"{step['n_fit']:,} train, scored on {len(splits['val']):,} val. OOD: fit on {fit_n:,}, "
                            f"scored on {score_n:,} (the course's RandomState(42) 80/20 split).")
            if step["key"].endswith("linear") and not fast and device.type == "cpu" \
                    and step["n_fit"] > LARGE_TRAIN_FOR_CPU:
                report.warned("exact probes on the CPU", f"the exact linear probe (scikit-learn lbfgs) on "
                              f"{step['n_fit']:,} images will take many minutes on the CPU",
                              "use --fast for the torch probes (same protocol), or run on a GPU machine")
            if report.echo:      # shown while the probe runs, replaced by its result line
                print(f"  {step['label']:<11} running ...", end="\r", flush=True)
        else:
            report.accuracies[step["key"]] = float(step["accuracy"])
            report.timings[f"probe {step['key']}"] = step["seconds"]
            report.note(f"  {step['label']:<11} {format_percent(step['accuracy']):>7}   ({step['seconds']:.1f} s)")

    try:
        result, features = probes.evaluate_encoder(model, splits["train"], splits["val"], splits["ood"], fast=fast,
                                                   batch_size=batch_size, device=device, progress=progress,
                                                   on_step=show, on_encode=encoding)
    except probes.EncodeError as error:
        report.failed("features on the data", str(error), "look for NaN weights or numerically unsafe operations "
                      "in get_features" if "NaN" in str(error) else "lower the memory use of get_features (the "
                      "grader uses batches of 64)")
        return
    except Exception as error:
        report.failed("probes", f"the {running['label']} probe raised {type(error).__name__}: {str(error)[:300]}",
                      "check the data files (each split needs at least 2 classes and 5 images)")
        return
    report.timings.update({f"features {k[len('encode_'):]}": v for k, v in result.seconds.items()
                           if k.startswith("encode_")})
    spread = float(features["train"].std(dim=0).max()) if len(features["train"]) > 1 else 0.0
    if spread < 1e-6:
        report.warned("features on the data", "every training image gets the same features (the encoder has "
                      "collapsed): the probes can only guess", "check the training loss and the collapse "
                      "monitor; retrain")
    else:
        report.passed("features on the data", ", ".join(f"{s} {tuple(v.shape)}" for s, v in features.items()) +
                      ", finite")
