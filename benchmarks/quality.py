"""Accuracy on unseen classes: train a named recipe for a fixed wall-clock budget, then the grader's protocol.

The grader's protocol, exactly (scikit-learn, utils.probes): raw get_features of ToTensor() images, 5-NN and
LogisticRegression(max_iter=1000). ID: fit on train, score on val. OOD: the course's RandomState(42) 80/20
split of each OOD file. OOD figures from one draw are noisy: pass several OOD files (tiny64's
`build.py course --ood-draw K` writes draw K) and the results give the mean and spread over them.

    python benchmarks/quality.py --recipe ntxent --data-dir /tmp/tiny64 --ood-files /tmp/ood0.npz /tmp/ood1.npz ...
    python benchmarks/quality.py --recipe vicreg --budget-min 20 lr=3e-3       # key=value overrides the recipe
    python benchmarks/quality.py --tiny                                        # CPU smoke run, used by the tests

Writes quality-<recipe>-<device>-<date>.json under --out ($OUT when set, else benchmarks/results).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import time
from pathlib import Path

import torch

import common  # noqa: F401  (puts the checkout on sys.path)
from models import ARCH, ImageEncoder
from utils import probes
from utils.checkpoint import load_weights_strict
from utils.data import load_npz, load_splits, ood_split, resolve_data_dir
from utils.provenance import provenance
from utils.submit import weights_metadata
from utils.synthetic import DataSpec, write_dataset
from utils.train import TrainConfig, parse_overrides, prepare_data, seed_all, train

# Named recipes: TrainConfig overrides. Every one trains for the budget; the schedule fits the budget.
RECIPES = {
    # The best public student recipe (SimCLR, ResNet-18 with a 3x3 stride-1 stem, no max-pool, 512 -> 1000
    # features, projector 1000 -> 2048 -> 128, AdamW 4e-3, wd 1e-4, batch 1024, warmup + cosine).
    "student_baseline": dict(arch="resnet18", loss="ntxent", temperature=0.1, optimizer="adamw", lr=4e-3,
                             weight_decay=1e-4, batch_size=1024, aug_strength=1.0),
    "ntxent": dict(arch="resnet18", loss="ntxent", temperature=0.1, lr=2e-3, batch_size=512),
    "ntxent_multicrop": dict(arch="resnet18", loss="ntxent", temperature=0.1, lr=2e-3, batch_size=512,
                             local_views=4, local_size=32),
    "vicreg": dict(arch="resnet18", loss="vicreg", lr=2e-3, batch_size=512),
    # The same objective on a stride-2 stem (a quarter of the FLOPs, so about 3-4x the epochs in a budget),
    # temperature 0.2 (solo-learn's tuned SimCLR value for small images), with and without multi-crop.
    "ntxent_s2": dict(arch="resnet18_s2", loss="ntxent", temperature=0.2, lr=2e-3, batch_size=512),
    "ntxent_s2_multicrop": dict(arch="resnet18_s2", loss="ntxent", temperature=0.2, lr=2e-3, batch_size=512,
                                local_views=4, local_size=32),
    "lejepa": dict(arch="resnet18", loss="lejepa", lejepa_lambda=0.05, lr=2e-3, batch_size=512),
}
TINY_SPEC = DataSpec(id_classes=5, train_per_class=40, val_per_class=10, ood_classes=5, ood_per_class=20)


def recipe_config(name: str, overrides: list[str], **settings) -> TrainConfig:
    """The recipe's TrainConfig with `key=value` overrides on top; unknown recipes name the known ones."""
    if name not in RECIPES:
        raise SystemExit(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return parse_overrides(overrides, TrainConfig(**{**RECIPES[name], **settings}))


def load_trained(path: Path, device) -> ImageEncoder:
    """An ImageEncoder of the architecture recorded in the file's metadata, weights loaded strictly."""
    arch = weights_metadata(path).get("arch", ARCH)
    return load_weights_strict(ImageEncoder(arch), path).to(device)


def mean_and_spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def evaluate(model, splits, ood_files: list[Path], fast: bool, device) -> dict:
    """The grader's four numbers (percent): ID once, OOD per draw plus mean and spread over the draws."""
    encode = lambda images: probes.encode_images(model, images, device=device)  # noqa: E731
    train_f, val_f = encode(splits["train"].images), encode(splits["val"].images)
    knn = lambda *a: probes.knn_accuracy(*a, fast=fast)      # noqa: E731
    lin = lambda *a: probes.linear_accuracy(*a, fast=fast)   # noqa: E731
    ytr, yva = splits["train"].labels, splits["val"].labels
    result = {"id_knn": knn(train_f, ytr, val_f, yva), "id_linear": lin(train_f, ytr, val_f, yva), "ood_draws": []}
    for path in ood_files:
        ood = splits["ood"] if path is None else load_npz(path)
        features = encode(ood.images)
        fit, score = ood_split(len(ood.labels))
        args = (features[fit], ood.labels[fit], features[score], ood.labels[score])
        result["ood_draws"].append({"file": str(path or ood.path), "n": len(ood.labels),
                                    "ood_knn": knn(*args), "ood_linear": lin(*args)})
    for key in ("ood_knn", "ood_linear"):
        result[key] = mean_and_spread([d[key] for d in result["ood_draws"]])
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="ntxent", choices=sorted(RECIPES))
    parser.add_argument("--data-dir", default=None, help="course-format folder (train/val/ood.npz)")
    parser.add_argument("--ood-files", nargs="*", type=Path, default=None,
                        help="OOD draws to average over (default: the data folder's ood.npz only)")
    parser.add_argument("--budget-min", type=float, default=20.0, help="training wall-clock budget in minutes")
    parser.add_argument("--fast-eval", action="store_true", help="torch probes instead of scikit-learn")
    parser.add_argument("--export", type=Path, default=None, help="copy the trained final_model.safetensors here")
    parser.add_argument("--weights", type=Path, default=None,
                        help="evaluate these weights (arch from their metadata) instead of training: e.g. the "
                             "exact scikit-learn protocol on the CPU for a model trained on a GPU")
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/quality_runs"), help="checkpoints (resume)")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke run: tiny arch, 1 epoch, generated data unless --data-dir is given")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(common.ROOT / "benchmarks" / "results"))
    parser.add_argument("overrides", nargs="*", help="TrainConfig settings as key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tiny:
        data_dir = Path(args.data_dir) if args.data_dir else Path(args.out) / "tiny_data"
        if not (data_dir / "ood.npz").is_file():
            write_dataset(data_dir, TINY_SPEC, seed=0, progress=False)
        args.runs_dir = Path(args.out) / "tiny_runs"
        settings = dict(arch="tiny", batch_size=32, epochs=1, time_budget_min=0.0, eval_every=0,
                        eval_linear_iters=50, progress=False)
    else:
        data_dir = resolve_data_dir(args.data_dir)
        settings = dict(time_budget_min=args.budget_min, eval_every=0, progress=True)
    cfg = recipe_config(args.recipe, args.overrides, data_dir=str(data_dir), out_dir=str(args.runs_dir), **settings)
    splits = load_splits(data_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed_all(cfg.seed)
    start = time.perf_counter()
    if args.weights:
        model, history, trained_from = load_trained(args.weights, device), {"train": []}, str(args.weights)
        cfg = dataclasses.replace(cfg, arch=model.arch)
    else:
        result = train(cfg, prepare_data(splits, device))
        model, history, trained_from = result.model, result.history, "trained in this run"
        if args.export:
            shutil.copy(result.weights_path, args.export)
    wall_s = time.perf_counter() - start

    model = model.eval()
    ood_files = args.ood_files or [None]
    eval_start = time.perf_counter()
    accuracies = evaluate(model, splits, ood_files, args.fast_eval, device)
    eval_s = time.perf_counter() - eval_start
    final = history["train"][-1] if history["train"] else {}
    record = {
        "benchmark": "quality", "recipe": args.recipe, **provenance(device),
        "data": {"dir": str(data_dir), "kind": "generated (tiny)" if args.tiny else "course format",
                 "n_train": len(splits["train"]), "n_val": len(splits["val"]),
                 "train_classes": len(splits["train"].classes), "ood_files": [str(p) for p in ood_files if p]},
        "weights": trained_from,
        "budget_min": None if args.weights else cfg.time_budget_min,
        "epochs_reached": final.get("epoch"), "steps": final.get("step"),
        "train_wall_s": None if args.weights else wall_s, "eval_s": eval_s,
        "protocol": "torch fast probes" if args.fast_eval else "scikit-learn, exactly as the grader",
        "config": dataclasses.asdict(cfg), "accuracies_percent": accuracies,
    }
    tag = f"{args.recipe}-tiny" if args.tiny else args.recipe
    if args.weights:
        tag = f"{tag}-{'fast' if args.fast_eval else 'exact'}-eval"
    path = common.write_results(common.results_path(Path(args.out), "quality", device, tag), record)
    rows = [{"recipe": args.recipe, "epochs": record["epochs_reached"], "ID k-NN": accuracies["id_knn"],
             "ID linear": accuracies["id_linear"], "OOD k-NN (mean)": accuracies["ood_knn"]["mean"],
             "OOD linear (mean)": accuracies["ood_linear"]["mean"], "OOD draws": len(ood_files)}]
    common.print_table(rows, list(rows[0]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
