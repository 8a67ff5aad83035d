"""Named training recipes: the one place where the kit's settings are written down.

A recipe is a plain dict of TrainConfig settings. The notebook's profiles, the command line and the benchmarks
all name a recipe instead of restating its settings:

    cfg = recipe_config("shipped", time_budget_min=20)               # the submitted recipe, for 20 minutes
    cfg = recipe_config("short")                                     # the notebook's CPU profile
    cfg = recipe_config("shipped_ema", ["lr=3e-3"], data_dir=...)    # key=value overrides, as on a command line

"shipped" is the recipe of the submitted weights. It is written once, in utils/config.py (SHIPPED), where
TrainConfig's defaults read it, so `TrainConfig()` and `python -m utils.train` train it too.

Suites are lists of recipes that `benchmarks/quality.py --suite NAME` trains back to back for the same wall-clock
budget each, so that they compare per GPU-minute.
"""
from __future__ import annotations

from dataclasses import dataclass

from utils.config import SHIPPED, TrainConfig, parse_overrides

RECIPES: dict[str, dict] = {
    "shipped": SHIPPED,
    # The notebook's CPU profile: a tiny network for 16 short CPU epochs on the embedded default data, enough for
    # the demo's figures to show learning (tools/demo.py LEARNING_BAR: ID k-NN >= 4x chance, OOD k-NN >= 3x).
    # crop_min_scale=0.8: the generated objects fill a modest part of the frame, and smaller crops often pair
    # views of background; it was the setting that mattered. Measured in benchmarks/results/short-recipe-sweep-
    # cpu-2026-12-02.json (fast probes, 20 + 20 classes, chance 5%): 20 epochs at crop 0.2 / 0.4 / 0.6 gave ID
    # k-NN 19.6 / 24.8 / 29.2% and OOD 12.5 / 14.0 / 19.5%, where the old 6 epochs at 0.2 gave 9.8% and 10.5%;
    # these settings give ID 30.8 / 26.8 / 30.0% and OOD 19.0 / 18.0 / 18.0% for seeds 0 / 1 / 2 (lr 3e-3: ID
    # 25.6 / 22.4 / 25.8%). Temperature 0.2, colour strength 1.5 and batch 64 each did worse in single runs.
    "short": dict(arch="tiny", loss="ntxent", temperature=0.1, local_views=0, crop_min_scale=0.8, epochs=16,
                  batch_size=128, lr=5e-3, eval_every=4, checkpoint_every=4, eval_linear_iters=100, log_every=5),
    # The best public student recipe (SimCLR, ResNet-18 with a 3x3 stride-1 stem, no max-pool, 512 -> 1000
    # features, projector 1000 -> 2048 -> 128, AdamW 4e-3, wd 1e-4, batch 1024, warmup + cosine).
    "student_baseline": dict(arch="resnet18", loss="ntxent", temperature=0.1, local_views=0, optimizer="adamw",
                             lr=4e-3, weight_decay=1e-4, batch_size=1024, aug_strength=1.0),
    # Benchmark variants, measured or not (benchmarks/README.md lists what was measured).
    "ntxent": dict(arch="resnet18", loss="ntxent", temperature=0.1, local_views=0, lr=2e-3, batch_size=512),
    "ntxent_multicrop": dict(arch="resnet18", loss="ntxent", temperature=0.1, lr=2e-3, batch_size=512,
                             local_views=4, local_size=32),
    "vicreg": dict(arch="resnet18", loss="vicreg", local_views=0, lr=2e-3, batch_size=512),
    # The same objective on a stride-2 stem (a quarter of the FLOPs, so about 3-4x the epochs in a budget),
    # temperature 0.2 (solo-learn's tuned SimCLR value for small images), with and without multi-crop.
    "ntxent_s2": {**SHIPPED, "local_views": 0},
    "ntxent_s2_multicrop": SHIPPED,          # the name the shipped recipe was measured under
    "lejepa": dict(arch="resnet18", loss="lejepa", lejepa_lambda=0.05, local_views=0, lr=2e-3, batch_size=512),

    # Candidates for a better recipe per GPU-minute (issue 14), each the shipped recipe plus one idea. Not
    # measured yet: the suite "recipes-1min" below is what measures them.
    # DCL (Yeh et al. 2022): the positive pair leaves NT-Xent's denominator. Reported +4.8 k-NN on ImageNet-1k at
    # batch 256 for SimCLR, no gain on CIFAR-10.
    "shipped_dcl": {**SHIPPED, "decoupled": True},
    # Polyak averaging: the EMA of the encoder (momentum 0.996 rising to 1) is exported instead of the last
    # weights. Costs one averaging pass over the weights per step.
    "shipped_ema": {**SHIPPED, "ema_momentum": 0.996, "ema_momentum_end": 1.0},
    # DINO-style self-distillation with the same multi-crop views: 4096 prototypes on the 128-d projection, a
    # teacher that is the EMA of the student, centred (0.9) and sharpened (0.04 vs 0.1) targets from the global
    # views. Momentum 0.99 instead of DINO's 0.996: a run of a few minutes has a few thousand steps, and DINO's
    # value is tuned for 100+ ImageNet epochs. lr 1e-3: DINO's 5e-4 x batch / 256.
    "dino": {**SHIPPED, "loss": "dino", "ema_momentum": 0.99, "ema_momentum_end": 1.0, "lr": 1e-3,
             "dino_prototypes": 4096, "dino_teacher_temperature": 0.04, "dino_student_temperature": 0.1,
             "dino_center_momentum": 0.9},
    # Fewer, larger local crops: 2 x 48 px cost about what 4 x 32 px do ((48/64)^2 * 2 = 1.1 vs 1.0 global views)
    # but keep more of each object.
    "shipped_local48": {**SHIPPED, "local_views": 2, "local_size": 48},
    # A guess at the best combination before any measurement: DCL + EMA + 2 x 48 px local crops.
    "combo_guess": {**SHIPPED, "decoupled": True, "ema_momentum": 0.996, "ema_momentum_end": 1.0,
                    "local_views": 2, "local_size": 48},
}


@dataclass(frozen=True)
class Suite:
    """Recipes trained back to back for the same wall-clock budget each (benchmarks/quality.py --suite)."""
    recipes: tuple[str, ...]
    budget_min: float
    note: str = ""


# One call of the lent H200 is at most 10 minutes: "recipes-1min" (5 x 1 min of training, with
# evaluation about 7 minutes) fits one call with time left for the winner; "recipes-2min" needs two calls.
CANDIDATES = ("shipped", "shipped_dcl", "shipped_ema", "dino", "combo_guess")
SUITES: dict[str, Suite] = {
    "recipes-1min": Suite(CANDIDATES, 1.0, "the shipped recipe and four ideas, 1 minute each: one device call"),
    "recipes-2min": Suite(CANDIDATES, 2.0, "the same at 2 minutes each: about 12 minutes, two device calls"),
    "local-crops-2min": Suite(("shipped", "shipped_local48"), 2.0, "4 x 32 px against 2 x 48 px local views"),
}


def recipe_settings(name: str) -> dict:
    """A copy of the recipe's settings; ValueError naming the known recipes for an unknown name."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return dict(RECIPES[name])


def recipe_config(name: str, overrides: list[str] | tuple[str, ...] = (), **settings) -> TrainConfig:
    """TrainConfig of the recipe `name`, then `settings` (keywords), then `overrides` ("key=value" strings, as on
    the command line) on top. Unknown names and settings are ValueErrors that say what exists."""
    return parse_overrides(list(overrides), TrainConfig(**{**recipe_settings(name), **settings}))


def suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    unknown = [r for r in SUITES[name].recipes if r not in RECIPES]
    if unknown:
        raise ValueError(f"suite {name!r} names unknown recipes {unknown}")
    return SUITES[name]
