"""A training budget a student can plan: early in a run, the measured speed, what the time budget (or the epochs)
will buy on this data, and what the shipped recipe reached after how many images in the kit's reference runs
(benchmarks/results/quality-*.json), with the budget that would reach those points at this speed.

    for line in plan_lines(images_per_s, n_train, cfg, done_s=60):
        print(line)

Tests: tests/test_budget.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from utils.config import SHIPPED, TrainConfig
from utils.provenance import RESULTS_DIR

# The plan is printed after this much training, or after a quarter of a shorter time budget.
PLAN_AFTER_S = 60.0
# The recipes the reference runs were recorded under that are the shipped recipe.
REFERENCE_RECIPES = ("ntxent_s2_multicrop", "shipped")


def plan_after_s(budget_s: float) -> float:
    """Seconds of training after which the plan is printed."""
    return min(PLAN_AFTER_S, budget_s / 4) if budget_s else PLAN_AFTER_S


def reference_curve(results: Path = RESULTS_DIR) -> list[dict]:
    """The shipped recipe's reference runs on a GPU, fewest images first: {"images" (seen in training),
    "epochs", "n_train", "ood_knn", "ood_linear" (percent, mean over OOD draws), "device", "file"}."""
    points = []
    for path in sorted(Path(results).glob("quality-*.json")):
        record = json.loads(path.read_text())
        data, accuracies = record.get("data"), record.get("accuracies_percent", {})
        if (record.get("recipe") not in REFERENCE_RECIPES or not record.get("epochs_reached")
                or "cpu" in str(record.get("device", "")).lower() or not isinstance(data, dict)):
            continue
        mean = lambda value: value["mean"] if isinstance(value, dict) else value  # noqa: E731
        points.append({"images": record["epochs_reached"] * data["n_train"], "epochs": record["epochs_reached"],
                       "n_train": data["n_train"], "ood_knn": mean(accuracies["ood_knn"]),
                       "ood_linear": mean(accuracies["ood_linear"]), "device": record["device"], "file": path.name})
    return sorted(points, key=lambda p: p["images"])


def is_shipped_recipe(cfg: TrainConfig) -> bool:
    """The settings the reference curve was measured with (the batch may differ: it is fitted to the GPU)."""
    return all(getattr(cfg, key) == value for key, value in SHIPPED.items() if key not in ("batch_size", "lr"))


def plan_lines(images_per_s: float, n_train: int, cfg: TrainConfig, *, done_s: float,
               curve: list[dict] | None = None) -> list[str]:
    """What the measured speed means for this run, a line each: the speed; what the budget (or the epochs) buys;
    the reference curve and the budget that would reach each of its points at this speed."""
    epochs_per_min = images_per_s * 60 / n_train
    lines = [f"Speed after {done_s / 60:.1f} min of training: {images_per_s:,.0f} images/s, {epochs_per_min:.2f} "
             f"epochs/min of these {n_train:,} training images."]
    if cfg.time_budget_min:
        epochs = epochs_per_min * cfg.time_budget_min
        lines.append(f"The {cfg.time_budget_min:g}-minute budget buys about {epochs:.1f} epochs "
                     f"({epochs * n_train / 1e6:.2f} M images seen).")
    else:
        lines.append(f"The {cfg.epochs} epochs take about {cfg.epochs / max(epochs_per_min, 1e-9):.1f} minutes of "
                     f"training.")
    curve = reference_curve() if curve is None else curve
    if not is_shipped_recipe(cfg) or not curve:
        lines.append("No reference curve for this recipe (the kit's reference runs are the shipped recipe's).")
        return lines
    lines.append("The shipped recipe in the kit's reference runs (Tiny ImageNet at 64x64, fast probes, OOD k-NN):")
    for point in curve:
        minutes = point["images"] / images_per_s / 60
        lines.append(f"  {point['images'] / 1e6:5.2f} M images seen ({point['epochs']} epochs of {point['n_train']:,}, "
                     f"{point['device']}): OOD k-NN {point['ood_knn']:.1f}%; at this speed {minutes:,.0f} min")
    lines.append("To train longer, raise TRAIN_MINUTES in the settings cell (or the recipe's epochs): a run cut by "
                 "the hub resumes from its newest checkpoint when the notebook runs again.")
    return lines
