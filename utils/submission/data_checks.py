"""The data files the probes need: found, valid, with the classes they should have."""
from __future__ import annotations

import numpy as np

from utils.data import (HUB_DATA_DIR, SPLIT_FILES, DataError, Split, find_split_file, load_npz, locate_data_dir,
                        places_tried)
from utils.submission.report import Report


def check_data(report: Report, data_dir, files: dict[str, str] | None, *, load: bool) -> dict[str, Split] | None:
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
        name = f"data {split}"
        try:
            path = find_split_file(split, directory, filename)
        except DataError as error:
            report.failed(name, str(error))
            all_ok = False
            continue
        if not load:
            report.passed(name, f"{path} found (not loaded: --quick)")
            continue
        try:
            splits[split] = load_npz(path)
        except DataError as error:
            report.failed(name, str(error), "regenerate or re-copy the file in the course format")
            all_ok = False
            continue
        data = splits[split]
        report.passed(name, f"{path}: {len(data):,} images, {len(data.classes)} classes")
    if load and all_ok:
        check_class_overlap(report, splits)
    return splits if load and all_ok else None


def check_class_overlap(report: Report, splits: dict[str, Split]) -> None:
    """Warnings only: val should hold the train classes, ood other classes (the point of the OOD test)."""
    train = splits["train"].classes
    shared = np.intersect1d(train, splits["ood"].classes)
    if len(shared):
        report.warned("data classes", f"{len(shared)} of the ood classes are also training classes (e.g. "
                      f"{shared[:5].tolist()}); expected unseen classes", "check that ood.npz is the course's file")
    unseen = np.setdiff1d(splits["val"].classes, train)
    if len(unseen):
        report.warned("data classes", f"{len(unseen)} val classes never occur in train (e.g. {unseen[:5].tolist()})"
                      f"; the in-distribution probes cannot predict them", "check that val.npz matches train.npz")
