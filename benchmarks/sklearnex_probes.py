"""The grader's four probes on the shipped weights with and without Intel's extension for scikit-learn, as the
course runs them: features as torch CPU tensors (the grader replica's ImageDatasetNPZ + DataLoader, ToTensor,
batch 64, extract_features_and_labels) handed straight to KNeighborsClassifier(n_neighbors=5, n_jobs=-1) and
LogisticRegression(max_iter=1000, n_jobs=-1). ID: fit on train, score on val; OOD: the course's 80/20 split.

Run it with the interpreter of a venv that has scikit-learn-intelex (make hub's .venv-hub-2025):

    .venv-hub-2025/bin/python benchmarks/sklearnex_probes.py --data /tmp/t64 --cache /tmp/t64-shipped-features.npz

Features are extracted once into --cache (outside the checkout: they come from the data set's images); each way
of running the probes is a fresh process (patch_sklearn() patches scikit-learn for the whole process). Writes
benchmarks/results/sklearnex-shipped-tiny64-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REPLICA = ROOT / "utils" / "submission" / "grader_replica" / "utils.py"
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-learn-intelex", "daal", "threadpoolctl")


def load_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extract(data: Path, cache: Path) -> None:
    """Features of train, val and ood (course path, shipped weights) into `cache` (npz)."""
    from safetensors.torch import load_model
    from torch.utils.data import DataLoader
    course = load_file("course_utils", REPLICA)
    models = load_file("custom_model", ROOT / "models.py")
    course.seed_all(42)
    model = models.ImageEncoder()
    load_model(model, str(ROOT / "final_model.safetensors"))
    model.eval()
    arrays, seconds = {}, {}
    for split in ("train", "val", "ood"):
        start = time.time()
        loader = DataLoader(course.ImageDatasetNPZ(data / f"{split}.npz"), batch_size=64, shuffle=False, num_workers=2)
        features, labels = course.extract_features_and_labels(model, loader)
        arrays[f"{split}_features"], arrays[f"{split}_labels"] = features.numpy(), labels.numpy()
        seconds[split] = round(time.time() - start, 1)
    np.savez(cache, **arrays, seconds=json.dumps(seconds))


def probes(cache: Path, extension: bool) -> dict:
    """The four probes in this process, patched by sklearnex when `extension`; predictions kept for comparison."""
    if extension:
        from sklearnex import patch_sklearn
        patch_sklearn()
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("sklearnex").setLevel(logging.INFO)   # which estimator ran accelerated, which fell back
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.neighbors import KNeighborsClassifier

    with np.load(cache) as saved:
        t = {key: torch.from_numpy(saved[key]) for key in saved.files if key != "seconds"}   # as the course hands them
    ood_n = len(t["ood_labels"])
    fit_mask = torch.from_numpy(np.random.RandomState(42).permutation(ood_n) >= int(ood_n * 0.2))
    sets = {"id": (t["train_features"], t["train_labels"], t["val_features"], t["val_labels"]),
            "ood": (t["ood_features"][fit_mask], t["ood_labels"][fit_mask],
                    t["ood_features"][~fit_mask], t["ood_labels"][~fit_mask])}
    result = {}
    for name, (fit_f, fit_y, score_f, score_y) in sets.items():
        start = time.time()
        knn = KNeighborsClassifier(n_neighbors=5, n_jobs=-1).fit(fit_f, fit_y)
        knn_pred = knn.predict(score_f)
        knn_s = time.time() - start
        start = time.time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            linear = LogisticRegression(max_iter=1000, n_jobs=-1).fit(fit_f, fit_y)
        linear_pred = linear.predict(score_f)
        linear_s = time.time() - start
        result[name] = {
            "n_fit": len(fit_y), "n_scored": len(score_y),
            "knn_accuracy_percent": 100 * float(accuracy_score(score_y, knn_pred)),
            "linear_accuracy_percent": 100 * float(accuracy_score(score_y, linear_pred)),
            "linear_n_iter": int(np.max(linear.n_iter_)),
            "linear_converged": int(np.max(linear.n_iter_)) < 1000 and not any(
                issubclass(w.category, ConvergenceWarning) for w in caught),
            "convergence_warnings": [str(w.message).splitlines()[0] for w in caught
                                     if issubclass(w.category, ConvergenceWarning)],
            "knn_seconds": round(knn_s, 2), "linear_seconds": round(linear_s, 2),
            "estimators": [type(knn).__module__, type(linear).__module__],
            "knn_pred": np.asarray(knn_pred).tolist(), "linear_pred": np.asarray(linear_pred).tolist()}
    return result


def versions() -> dict:
    from utils.environment import installed_version
    return {"python": platform.python_version(), **{name: installed_version(name) for name in PACKAGES}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="course-format folder: train/val/ood.npz")
    parser.add_argument("--cache", type=Path, required=True, help="features file (npz), made once")
    parser.add_argument("--probes", choices=["on", "off"], help=argparse.SUPPRESS)   # one way, in this process
    args = parser.parse_args(argv)
    if args.probes:
        print(json.dumps(probes(args.cache, args.probes == "on")))
        return 0
    if not args.cache.is_file():
        print(f"Extracting features into {args.cache} ...", flush=True)
        extract(args.data, args.cache)
    runs = {}
    for way in ("off", "on"):
        done = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--cache", str(args.cache),
                               "--probes", way], capture_output=True, text=True, check=True)
        runs[way] = json.loads(done.stdout.strip().splitlines()[-1])
        # sklearnex's own handler and the root one print each line twice: keep each line once
        runs[way]["log"] = sorted({line.replace("INFO:sklearnex: ", "INFO:sklearnex:")
                                   for line in done.stderr.splitlines() if "sklearn" in line})
    plain, patched = runs["off"], runs["on"]
    compare = {}
    for name in ("id", "ood"):
        p, x = plain[name], patched[name]
        compare[name] = {
            "knn_predictions_identical": p["knn_pred"] == x["knn_pred"],
            "knn_predictions_differing": int(sum(a != b for a, b in zip(p["knn_pred"], x["knn_pred"]))),
            "linear_predictions_differing": int(sum(a != b for a, b in zip(p["linear_pred"], x["linear_pred"]))),
            "linear_accuracy_difference_points": round(x["linear_accuracy_percent"] - p["linear_accuracy_percent"], 2),
            "knn_accuracy_difference_points": round(x["knn_accuracy_percent"] - p["knn_accuracy_percent"], 2)}
        for run in (p, x):
            del run["knn_pred"], run["linear_pred"]
    # the checkout's utils, for the record only
    from utils.provenance import RESULTS_DIR, device_description, free_results_path, git_commit
    with np.load(args.cache) as saved:
        sizes = {split: int(len(saved[f"{split}_labels"])) for split in ("train", "val", "ood")}
        classes = {split: int(len(np.unique(saved[f"{split}_labels"]))) for split in ("train", "ood")}
        extraction_s = json.loads(str(saved["seconds"]))
    record = {
        "what": "the course's four probes on the shipped weights (final_model.safetensors), torch CPU tensors "
                "straight into scikit-learn, without and with Intel's extension (sklearnex.patch_sklearn), on the "
                "same cached features",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_description("cpu"), **git_commit(), "versions": versions(),
        "data": {"kind": "tiny64 course-format files (Tiny ImageNet photos, 64x64): build.py course",
                 "sizes": sizes, "classes": classes, "ood_split": "RandomState(42) permutation >= 20%: fit 80%, score 20%"},
        "feature_extraction_s": extraction_s,
        "without_extension": plain, "with_extension": patched, "comparison": compare,
        "timing_note": f"load average {os.getloadavg()[0]:.1f} when written, on a 2-core machine shared with other "
                       f"jobs: the times are indicative only",
    }
    out = free_results_path(RESULTS_DIR, f"sklearnex-shipped-tiny64-{record['date'][:10]}")
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(compare, indent=1))
    print(f"record: {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
