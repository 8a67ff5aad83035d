"""The grader's protocol on a checked submission: raw `get_features`, then the four probes of
`utils.probes.evaluate_protocol` (the one implementation), each reported as it finishes."""
from __future__ import annotations

import time

import torch

from utils import probes
from utils.data import Split, ood_split
from utils.submission.course import LARGE_TRAIN_FOR_CPU
from utils.submission.report import Report, format_percent


def run_protocol(report: Report, model, splits: dict[str, Split], *, fast: bool, batch_size: int,
                 progress: bool) -> None:
    """Raw get_features of ToTensor images (batch `batch_size`), then the four probes; fills
    report.accuracies (percent) and report.timings."""
    device = next(model.parameters()).device
    features = {}
    for split in ("train", "val", "ood"):
        images = splits[split].images
        report.note(f"Extracting {split} features: {len(images):,} images, batch {batch_size}, {device}")
        start = time.perf_counter()
        try:
            features[split] = probes.encode_images(model, images, batch_size=batch_size, device=device,
                                                   progress=progress)
        except Exception as error:
            report.failed("features on the data", f"get_features on the {split} images raised "
                          f"{type(error).__name__}: {str(error)[:300]}",
                          "lower the memory use of get_features (the grader uses batches of 64)")
            return
        report.timings[f"features {split}"] = time.perf_counter() - start
    if not check_data_features(report, features):
        return

    run_probes(report, probes, features, splits, fast=fast, device=device)


def run_probes(report: Report, probes, features: dict[str, torch.Tensor], splits: dict[str, Split], *,
               fast: bool, device: torch.device) -> None:
    """The four probes (probes.evaluate_protocol, the one implementation of the grader's protocol), a line each
    with its accuracy and time as it finishes (the exact linear probe can take minutes: the user sees which
    step is running). ID: fit on train, scored on val. OOD: the course's RandomState(42) 80/20 split."""
    labels = {name: torch.from_numpy(splits[name].labels) for name in ("train", "val", "ood")}
    fit_n, score_n = (len(ix) for ix in ood_split(len(splits["ood"])))
    how = "torch (--fast)" if fast else "scikit-learn, exactly as the grader"
    report.note(f"Probes ({how}): k-NN (k=5) and logistic regression (C=1, max_iter=1000). ID: fit on "
                f"{len(features['train']):,} train, scored on {len(features['val']):,} val. OOD: fit on "
                f"{fit_n:,}, scored on {score_n:,} (the course's RandomState(42) 80/20 split).")

    running = {"label": "first"}

    def show(step: dict) -> None:
        running["label"] = step["label"]
        if step["event"] == "start":
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
        probes.evaluate_protocol((features["train"], labels["train"]), (features["val"], labels["val"]),
                                 (features["ood"], labels["ood"]), fast=fast, progress=False, device=device,
                                 on_step=show)
    except Exception as error:
        report.failed("probes", f"the {running['label']} probe raised {type(error).__name__}: {str(error)[:300]}",
                      "check the data files (each split needs at least 2 classes and 5 images)")


def check_data_features(report: Report, features: dict[str, torch.Tensor]) -> bool:
    """The probes need finite features; identical features for every image mean a collapsed encoder."""
    for split, values in features.items():
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            report.failed("features on the data", f"{bad} of the {split} feature values are NaN or infinite "
                          f"(expected finite values)", "look for NaN weights or numerically unsafe operations "
                          "in get_features")
            return False
    spread = float(features["train"].float().std(dim=0).max()) if len(features["train"]) > 1 else 0.0
    if spread < 1e-6:
        report.warned("features on the data", "every training image gets the same features (the encoder has "
                      "collapsed): the probes can only guess", "check the training loss and the collapse "
                      "monitor; retrain")
    else:
        report.passed("features on the data", ", ".join(f"{s} {tuple(v.shape)}" for s, v in features.items()) +
                      ", finite")
    return True
