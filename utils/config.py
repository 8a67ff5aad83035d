"""Every setting of a training run (`TrainConfig`), the named recipes, `key=value` parsing, and where a run lives.

A recipe is a plain dict of TrainConfig settings, named in RECIPES: the notebook's profiles, the command line and
the benchmarks name a recipe instead of restating its settings.

    cfg = recipe_config("shipped", time_budget_min=20)               # the submitted recipe, for 20 minutes
    cfg = recipe_config("short")                                     # the notebook's CPU profile
    cfg = recipe_config("shipped_ema", ["lr=3e-3"], data_dir=...)    # key=value overrides, as on a command line

A run's folder is named by a fingerprint of the settings that change what is computed, the data's signature and
the source of user-supplied code, so that running the same settings again resumes, and changing any of them
starts a new folder.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from models import ARCH, ARCHITECTURES
from utils import dino, losses

# Objectives of projections (losses.LOSSES), plus DINO, which the engine trains with a head and a teacher.
LOSS_NAMES = (*losses.LOSSES, "dino")

# The submitted recipe, written once: TrainConfig's defaults below read it (so `TrainConfig()` and
# `python -m utils.train` train it), and RECIPES names it "shipped". ResNet-18 with a stride-2 stem (models.ARCH,
# what ImageEncoder() builds), multi-crop SimCLR (2 x 64 px + 4 x 32 px views), temperature 0.2, AdamW 2e-3,
# batch 512. Its measurements against the student baseline are in benchmarks/README.md.
SHIPPED = dict(arch=ARCH, loss="ntxent", temperature=0.2, global_views=2, local_views=4, local_size=32,
               aug_strength=1.0, crop_min_scale=0.2, optimizer="adamw", lr=2e-3, weight_decay=1e-4,
               batch_size=512, warmup=0.05, final_lr_ratio=0.0)


@dataclass
class TrainConfig:
    """Every setting of a run. Override any of them as `key=value` (command line) or keyword (Python)."""
    # objective: "ntxent" (SimCLR), "vicreg", "lejepa" (invariance + SIGReg), "dino" (self-distillation)
    loss: str = SHIPPED["loss"]
    temperature: float = SHIPPED["temperature"]   # ntxent
    decoupled: bool = False             # ntxent: DCL, the positive pair leaves the denominator (Yeh et al. 2022)
    lejepa_lambda: float = 0.05         # lejepa: weight of SIGReg
    # dino: prototypes on the projection; the teacher is the EMA below (ema_momentum > 0); centred, sharpened
    dino_prototypes: int = 4096
    dino_teacher_temperature: float = 0.04   # below dino_student_temperature: the targets are sharpened
    dino_student_temperature: float = 0.1
    dino_center_momentum: float = 0.9
    # weight averaging: an EMA of the encoder, exported instead of the last weights (and DINO's teacher)
    ema_momentum: float = 0.0           # 0: off (e.g. 0.996); rises to ema_momentum_end on a cosine over the run
    ema_momentum_end: float = 1.0       # equal to ema_momentum: a fixed momentum
    # model: a name in models.ARCHITECTURES (models.ARCH is what ImageEncoder() builds)
    arch: str = SHIPPED["arch"]
    # views: global 64-px views + optional small multi-crop views
    global_views: int = SHIPPED["global_views"]
    # multi-crop: small views of parts of the image, which the loss must match to the global views
    local_views: int = SHIPPED["local_views"]
    local_size: int = SHIPPED["local_size"]
    aug_strength: float = SHIPPED["aug_strength"]   # colour-jitter strength (1: BYOL's, 2: about SimCLR's)
    crop_min_scale: float = SHIPPED["crop_min_scale"]   # smallest crop area of a global view (fraction of the image)
    # optimisation
    epochs: int = 100
    time_budget_min: float = 0.0        # > 0: train for this many minutes; the schedule fits the budget
    batch_size: int = SHIPPED["batch_size"]
    optimizer: str = SHIPPED["optimizer"]    # "adamw" or "lars"
    lr: float = SHIPPED["lr"]
    weight_decay: float = SHIPPED["weight_decay"]
    warmup: float = SHIPPED["warmup"]        # fraction of the run spent warming up the learning rate
    final_lr_ratio: float = SHIPPED["final_lr_ratio"]
    # data
    data_dir: str = ""                  # "" = resolve (utils.data.locate_data_dir's order)
    max_train_images: int = 0           # 0 = all; else this many, spread over every class (utils.data.spread_rows)
    # performance
    device: str = "auto"                # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"             # "auto" (bf16 on CUDA, fp32 on CPU), "bf16", "fp32"
    channels_last: bool = True          # CUDA only
    compile: bool = False               # torch.compile the model (CUDA; first steps are slower)
    # under torchrun (utils/distributed.py): batch norm over the global batch (CUDA), and how long a collective
    # waits for a rank that stopped answering before every rank fails (the other ranks also wait this long for
    # rank 0's probes and export: raise it when those take longer)
    sync_bn: bool = False
    dist_timeout_min: float = 10.0
    # monitoring and persistence
    eval_every: int = 5                 # epochs between probe evaluations (0: only at the end)
    eval_max_train: int = 20000         # train images used to fit the periodic ID probes (0 = all)
    eval_linear_iters: int = 300        # L-BFGS iterations of the periodic linear probe
    checkpoint_every: int = 5           # epochs between checkpoints (0: only the time-based ones)
    checkpoint_every_min: float = 10.0  # also checkpoint when this many minutes passed since the last one
    keep_checkpoints: int = 3
    log_every: int = 25                 # steps between logged loss / collapse statistics
    out_dir: str = "runs"
    run_name: str = ""                  # "" = "<loss>-<fingerprint>"
    export_path: str = ""               # "" = <run dir>/final_model.safetensors
    seed: int = 0
    resume: bool = True
    progress: bool = True

    def __post_init__(self):
        checks = [
            (self.loss in LOSS_NAMES, f"loss must be one of {sorted(LOSS_NAMES)}, got {self.loss!r}"),
            (not self.decoupled or self.loss == "ntxent",
             f"decoupled=True is an option of loss='ntxent' (DCL), got loss={self.loss!r}"),
            (0 <= self.ema_momentum < 1, f"ema_momentum must be in [0, 1) (0: no EMA; e.g. 0.996), got "
                                         f"{self.ema_momentum}"),
            (self.ema_momentum == 0 or self.ema_momentum <= self.ema_momentum_end <= 1,
             f"ema_momentum_end must be in [ema_momentum, 1] = [{self.ema_momentum}, 1], got {self.ema_momentum_end}"),
            (self.loss != "dino" or self.ema_momentum > 0,
             "loss='dino' needs a teacher, the EMA of the student: set ema_momentum > 0 (DINO: 0.996)"),
            (isinstance(self.dino_prototypes, int) and self.dino_prototypes >= 2,
             f"dino_prototypes must be an int >= 2, got {self.dino_prototypes!r}"),
            (self.arch in ARCHITECTURES, f"arch must be one of {sorted(ARCHITECTURES)}, got {self.arch!r}"),
            (self.optimizer in ("adamw", "lars"), f"optimizer must be 'adamw' or 'lars', got {self.optimizer!r}"),
            (self.precision in ("auto", "bf16", "fp32"), f"precision must be auto, bf16 or fp32, got {self.precision!r}"),
            (self.global_views >= 1 and self.global_views + self.local_views >= 2,
             f"need at least 2 views in all (global_views={self.global_views}, local_views={self.local_views})"),
            (self.epochs >= 1 or self.time_budget_min > 0, f"epochs must be >= 1 (got {self.epochs}) or set time_budget_min"),
            (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.warmup < 1, f"warmup is a fraction of the run in [0, 1), got {self.warmup}"),
            (0 < self.crop_min_scale <= 1, f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}"),
            (self.aug_strength >= 0, f"aug_strength must be >= 0, got {self.aug_strength}"),
            (self.time_budget_min >= 0, f"time_budget_min must be >= 0, got {self.time_budget_min}"),
            (self.dist_timeout_min > 0, f"dist_timeout_min must be > 0, got {self.dist_timeout_min}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        dino.check_settings(teacher_temperature=self.dino_teacher_temperature,
                            student_temperature=self.dino_student_temperature,
                            center_momentum=self.dino_center_momentum, num_global=self.global_views, prefix="dino_")

    # Settings that do not change what is computed: they are left out of the run's fingerprint.
    NOT_IN_FINGERPRINT = ("eval_every", "eval_max_train", "eval_linear_iters", "checkpoint_every",
                          "checkpoint_every_min", "keep_checkpoints", "log_every", "out_dir", "run_name",
                          "export_path", "resume", "progress", "device", "compile", "data_dir",
                          # the world size goes into the fingerprint where it changes the result
                          # (World.result_tag), sync_bn with it
                          "sync_bn", "dist_timeout_min")

    def fingerprint(self, data_signature: str = "", code_signature: str = "") -> str:
        """Short hash of the settings that change the result, plus the data's signature and the signature of
        user-supplied code (code_signature: the notebook's loss and step functions)."""
        items = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.NOT_IN_FINGERPRINT}
        blob = json.dumps(items, sort_keys=True) + data_signature + code_signature
        return hashlib.sha1(blob.encode()).hexdigest()[:8]


def parse_overrides(args: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from `key=value` strings, each value converted to the field's type, with clear errors."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = dataclasses.asdict(base) if base else {}
    for arg in args:
        if "=" not in arg:
            raise ValueError(f"expected key=value, got {arg!r}")
        key, raw = arg.split("=", 1)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else f" Known keys: {', '.join(fields)}."
            raise ValueError(f"unknown setting {key!r}.{hint}")
        values[key] = _convert(key, raw, fields[key].type)
    return TrainConfig(**values)


def _convert(key: str, raw: str, type_name) -> object:
    type_name = getattr(type_name, "__name__", str(type_name))
    try:
        if type_name == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"setting {key} expects {type_name}, got {raw!r}") from None
    return raw


def run_dir_of(cfg: TrainConfig, data_signature: str, code_signature: str = "") -> Path:
    """The folder of cfg's run: out_dir/run_name, or out_dir/<loss>-<fingerprint of the settings, data and
    user-supplied code (code_signature)>."""
    return Path(cfg.out_dir) / (cfg.run_name or f"{cfg.loss}-{cfg.fingerprint(data_signature, code_signature)}")


RECIPES: dict[str, dict] = {
    "shipped": SHIPPED,
    # The notebook's CPU profile: the tiny network for 16 short CPU epochs on the embedded default data, enough
    # for the demo's figures to show learning (tools/demo.py LEARNING_BAR). crop_min_scale=0.8: the generated
    # objects fill a modest part of the frame, and smaller crops often pair two views of background. The sweep
    # that chose these settings is benchmarks/results/short-recipe-sweep-cpu-2026-12-02.json.
    "short": dict(arch="tiny", loss="ntxent", temperature=0.1, local_views=0, crop_min_scale=0.8, epochs=16,
                  batch_size=128, lr=5e-3, eval_every=4, checkpoint_every=4, eval_linear_iters=100, log_every=5),
    # The best public student recipe (SimCLR, ResNet-18 with a 3x3 stride-1 stem, no max-pool, 512 -> 1000
    # features, projector 1000 -> 2048 -> 128, AdamW 4e-3, wd 1e-4, batch 1024, warmup + cosine).
    "student_baseline": dict(arch="resnet18", loss="ntxent", temperature=0.1, local_views=0, optimizer="adamw",
                             lr=4e-3, weight_decay=1e-4, batch_size=1024, aug_strength=1.0),
    # Benchmark variants (benchmarks/README.md lists what was measured).
    "ntxent": dict(arch="resnet18", loss="ntxent", temperature=0.1, local_views=0, lr=2e-3, batch_size=512),
    "ntxent_multicrop": dict(arch="resnet18", loss="ntxent", temperature=0.1, lr=2e-3, batch_size=512,
                             local_views=4, local_size=32),
    "vicreg": dict(arch="resnet18", loss="vicreg", local_views=0, lr=2e-3, batch_size=512),
    # The same objective on a stride-2 stem (a quarter of the FLOPs, so about 3-4x the epochs in a budget),
    # temperature 0.2 (solo-learn's tuned SimCLR value for small images), with and without multi-crop.
    "ntxent_s2": {**SHIPPED, "local_views": 0},
    "ntxent_s2_multicrop": SHIPPED,          # the name the shipped recipe was measured under
    "lejepa": dict(arch="resnet18", loss="lejepa", lejepa_lambda=0.05, local_views=0, lr=2e-3, batch_size=512),
    # Candidates for a better recipe per GPU-minute, each the shipped recipe plus one idea.
    # DCL (Yeh et al. 2022): the positive pair leaves NT-Xent's denominator.
    "shipped_dcl": {**SHIPPED, "decoupled": True},
    # Polyak averaging: the EMA of the encoder (momentum 0.996 rising to 1) is exported instead of the last weights.
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
    # DCL + EMA + 2 x 48 px local crops together.
    "combo_guess": {**SHIPPED, "decoupled": True, "ema_momentum": 0.996, "ema_momentum_end": 1.0,
                    "local_views": 2, "local_size": 48},
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
