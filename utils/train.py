"""The training engine: device-resident data, GPU views, one objective, checkpoints, periodic probes.

Read `train()` top to bottom: it is the whole loop. Everything it calls is a small function in this file or
in a sibling module (augment, losses, probes, checkpoint, optim, monitor).

Command line (same code as the notebook, for long runs outside a browser):

    python -m utils.train loss=ntxent epochs=100 batch_size=512
    python -m utils.train time_budget_min=20 arch=resnet18_s2 data_dir=/path/to/data

A run lives in `<out_dir>/<run_name>/` (run_name defaults to the objective plus a fingerprint of every
setting that changes the result). Running the same settings again resumes from the newest checkpoint there.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import ARCHITECTURES, ImageEncoder
from utils import augment, checkpoint, dino, features, losses, monitor, optim, probes
from utils.data import Split, as_model_input, epoch_order, load_splits, resolve_data_dir, to_device
from utils.device import (TRIAL_BATCHES, configure_backends, fit_batch_to_memory, free_memory_bytes,
                          measure_step_memory, pick_device)
from utils.ema import ModelEMA, ema_momentum
from utils.progress import progress_bar, progress_write


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------

# Objectives of projections (losses.LOSSES), plus DINO, which the engine trains with a head and a teacher.
LOSS_NAMES = (*losses.LOSSES, "dino")


@dataclass
class TrainConfig:
    """Every setting of a run. Override any of them as `key=value` (command line) or keyword (Python)."""
    # objective: "ntxent" (SimCLR), "vicreg", "lejepa" (invariance + SIGReg), "dino" (self-distillation)
    loss: str = "ntxent"
    temperature: float = 0.2            # ntxent
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
    arch: str = "resnet18_s2"
    # views: global 64-px views + optional small multi-crop views
    global_views: int = 2
    local_views: int = 4                # multi-crop: measured +4.7 points OOD linear (benchmarks/README.md)
    local_size: int = 32
    aug_strength: float = 1.0           # colour-jitter strength (1: BYOL's, 2: about SimCLR's)
    crop_min_scale: float = 0.2         # smallest crop area of a global view, as a fraction of the image
    # optimisation
    epochs: int = 100
    time_budget_min: float = 0.0        # > 0: train for this many minutes; the schedule fits the budget
    batch_size: int = 512
    optimizer: str = "adamw"            # "adamw" or "lars"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05                # fraction of the run spent warming up the learning rate
    final_lr_ratio: float = 0.0
    # data
    data_dir: str = ""                  # "" = resolve: $CS461_DATA_DIR, the hub folder, ./cs461_assignment1_data
    max_train_images: int = 0           # 0 = all
    # performance
    device: str = "auto"                # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"             # "auto" (bf16 on CUDA, fp32 on CPU), "bf16", "fp32"
    channels_last: bool = True          # CUDA only
    compile: bool = False               # torch.compile the model (CUDA; first steps are slower)
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
                          "export_path", "resume", "progress", "device", "compile", "data_dir")

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


# ----------------------------------------------------------------------------------------------------------
# Set-up helpers
# ----------------------------------------------------------------------------------------------------------

def seed_all(seed: int) -> None:
    """The course's seed_all: Python, NumPy and PyTorch (CPU and every GPU) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


@dataclass
class TrainData:
    """The three splits (numpy, validated) and the training images as one uint8 tensor on the device."""
    train: Split
    val: Split
    ood: Split
    train_on_device: torch.Tensor       # uint8 (N, 64, 64, 3)

    def signature(self) -> str:
        h = hashlib.sha1()
        for split in (self.train, self.val, self.ood):
            h.update(str(split.images.shape).encode())
            h.update(np.ascontiguousarray(split.labels).tobytes())
        return h.hexdigest()[:8]


def prepare_data(splits: dict[str, Split], device: torch.device, max_train_images: int = 0) -> TrainData:
    train = splits["train"]
    if max_train_images and max_train_images < len(train):
        train = Split(train.images[:max_train_images], train.labels[:max_train_images], train.class_names,
                      train.path)
    return TrainData(train, splits["val"], splits["ood"], to_device(train.images, device))


def autocast_context(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


# ----------------------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------------------

def project_views(model, views: list[torch.Tensor]) -> torch.Tensor:
    """Projections of every view, (V, B, proj_dim). Views of the same size go through the model together
    (one forward for both global views), which is faster than one forward per view."""
    batch = views[0].shape[0]
    out = [None] * len(views)
    sizes = sorted({v.shape[-1] for v in views}, reverse=True)
    for size in sizes:
        index = [i for i, v in enumerate(views) if v.shape[-1] == size]
        _, z = model(torch.cat([views[i] for i in index]))
        for j, i in enumerate(index):
            out[i] = z[j * batch:(j + 1) * batch]
    return torch.stack(out)


def make_objective(cfg: TrainConfig):
    """loss(z (V, B, D), generator) -> scalar, with the config's hyper-parameters bound."""
    if cfg.loss == "dino":
        raise ValueError("loss='dino' is not a function of the projections alone: it needs its head and teacher, "
                         "which train() builds and runs in self_distillation_step. Call train(cfg) without an "
                         "objective or step for it.")
    fn = losses.get_loss(cfg.loss)
    if cfg.loss == "ntxent":
        return lambda z, generator: fn(z, temperature=cfg.temperature, decoupled=cfg.decoupled)
    if cfg.loss == "lejepa":
        return lambda z, generator: fn(z, lambd=cfg.lejepa_lambda, num_global=cfg.global_views,
                                       generator=generator)
    return lambda z, generator: fn(z)


def training_step(model, batch_uint8, view_cfgs, objective, optimizer, generator, autocast):
    """Views -> projections -> loss -> update. Returns (loss as a 0-d tensor, projections of view 0)."""
    views = augment.make_views(batch_uint8, view_cfgs, generator=generator)
    with autocast:
        z = project_views(model, views)
        loss = objective(z.float(), generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), z[0].detach()


def self_distillation_step(model, batch_uint8, view_cfgs, distiller, optimizer, generator, autocast):
    """DINO's step: the student (model + distiller.head) sees every view, the teacher (distiller.teacher, the
    EMA that train() updates after this step) sees the global views only, without gradient.
    Returns (loss as a 0-d tensor, projections of view 0), like training_step."""
    views = augment.make_views(batch_uint8, view_cfgs, generator=generator)
    with autocast:
        z = project_views(model, views)                                                     # (V, B, D)
        with torch.no_grad():
            teacher_z = project_views(distiller.teacher_encoder, views[:distiller.num_global])  # (G, B, D)
        loss, teacher_logits = distiller.loss(z.float(), teacher_z.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    distiller.update_center(teacher_logits)    # after the loss: this step's targets used the previous centre
    return loss.detach(), z[0].detach()


def views_loss(model, views: list[torch.Tensor], objective, generator) -> torch.Tensor:
    """The loss of one batch of views without an update (validation, the out-of-memory trial): the objective of
    the projections, or DINO's loss with the teacher on the global views."""
    if isinstance(objective, dino.SelfDistillation):
        with torch.no_grad():
            teacher_z = project_views(objective.teacher_encoder, views[:objective.num_global])
        return objective.loss(project_views(model, views).float(), teacher_z.float())[0]
    return objective(project_views(model, views).float(), generator)


@torch.no_grad()
def validation_loss(model, images: np.ndarray, view_cfgs, objective, device, batch_size: int, seed: int,
                    autocast) -> float:
    """The self-supervised loss on held-out images, in eval mode, with a fixed augmentation seed so that
    values are comparable across evaluations. DINO's teacher is put in eval mode too: in training mode its
    batch-norm statistics (which are exported) would learn from validation images."""
    modules = [model] + ([objective.teacher] if isinstance(objective, dino.SelfDistillation) else [])
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    batch_size = min(batch_size, len(images))
    total, count = 0.0, 0
    for start in range(0, len(images) - batch_size + 1, batch_size):
        batch = torch.from_numpy(images[start:start + batch_size]).to(device)
        views = augment.make_views(batch, view_cfgs, generator=generator)
        with autocast:
            loss = views_loss(model, views, objective, generator)
        total, count = total + float(loss), count + 1
    for m, mode in zip(modules, was_training):
        m.train(mode)
    return total / max(count, 1)


def code_signature(*functions) -> str:
    """A short hash of the source code of user-supplied functions (the notebook's custom_loss_function and
    training_step), for the run's fingerprint: editing one of them starts a new run folder instead of resuming
    a run trained with the old code. "" when no function is given (the engine's own code).

    When a function's source cannot be read (typed into an interactive shell, a builtin, a C extension), its
    qualified name stands in, and a note says so: editing it then does not change the fingerprint."""
    parts = []
    for fn in functions:
        if fn is None:
            continue
        try:
            parts.append(inspect.getsource(fn if inspect.isroutine(fn) else type(fn)))
        except (OSError, TypeError):
            name = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
            print(f"note: the source of {name} is not available, so the run's fingerprint uses its name: editing "
                  f"it will not start a new run folder (set run_name or resume=False to start one).")
            parts.append(name)
    return hashlib.sha1("\n\n".join(parts).encode()).hexdigest()[:8] if parts else ""


def probe_fit_rows(n_train: int, max_rows: int) -> np.ndarray:
    """Rows of the training set that fit the periodic ID probes: all of them, or `max_rows` spread evenly over
    the whole set. Not the first `max_rows`: course-format files are often sorted by class, and the first 20,000
    of 50,000 sorted images hold only 40 of 100 classes (the probe then scores at most 40%)."""
    if not max_rows or max_rows >= n_train:
        return np.arange(n_train)
    return np.linspace(0, n_train - 1, max_rows).round().astype(np.int64)


def probe_metrics(model, data: TrainData, cfg: TrainConfig, device) -> dict[str, float]:
    """Fast probes (percent) under the grader's protocol on the current model (probes.evaluate_protocol): ID fit
    on train (at most eval_max_train images), scored on val; OOD fit/scored on the course's 80/20 split."""
    fit_rows = probe_fit_rows(len(data.train), cfg.eval_max_train)
    features.fit_feature_statistics(model, data.train.images[fit_rows], device=device)  # the design's statistics
    encode = lambda images: probes.encode_images(model, images, device=device)  # noqa: E731
    result = probes.evaluate_protocol((encode(data.train.images[fit_rows]), data.train.labels[fit_rows]),
                                      (encode(data.val.images), data.val.labels),
                                      (encode(data.ood.images), data.ood.labels),
                                      fast=True, progress=False, device=device, max_iter=cfg.eval_linear_iters)
    return {key: getattr(result, key) for key in ("id_knn", "id_linear", "ood_knn", "ood_linear")}


# ----------------------------------------------------------------------------------------------------------
# Run state: everything a checkpoint must hold to continue the same run
# ----------------------------------------------------------------------------------------------------------

@dataclass
class RunState:
    step: int = 0                        # optimizer steps done
    epoch: int = 0                       # complete epochs done
    batch_in_epoch: int = 0              # steps done inside the current epoch
    order: torch.Tensor | None = None    # the current epoch's shuffle (N,)
    epoch_loss_sum: float = 0.0
    elapsed_s: float = 0.0               # training seconds (evaluation and checkpointing excluded)
    history: dict = field(default_factory=lambda: {"train": [], "eval": [], "log": []})


def rng_states(order_gen: torch.Generator, aug_gen: torch.Generator) -> dict:
    """Every random generator's state, in types torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    return {
        "python": list(_to_lists(random.getstate())),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "order": order_gen.get_state(),
        "aug": aug_gen.get_state(),
    }


def restore_rng_states(states: dict, order_gen: torch.Generator, aug_gen: torch.Generator) -> None:
    random.setstate(_to_tuples(states["python"]))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    order_gen.set_state(states["order"])
    aug_gen.set_state(states["aug"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    model: ImageEncoder
    history: dict
    run_dir: Path
    weights_path: Path
    metrics_path: Path
    config: TrainConfig


class TrainError(RuntimeError):
    """A run cannot go on; the message says why and what to change."""


def train(cfg: TrainConfig, data: TrainData | None = None, objective=None, step=None) -> TrainResult:
    """Train `cfg.arch` with `cfg.loss` on data (loaded from cfg.data_dir when not given); resume when a
    checkpoint of the same run exists; evaluate, checkpoint and finally export final_model.safetensors.

    `objective(z (V, B, D), generator) -> scalar` replaces the loss built from cfg (make_objective), e.g. the
    notebook's custom_loss_function. `step(model, batch_uint8, view_cfgs, objective, optimizer, generator,
    autocast) -> (loss, z0)` replaces training_step, e.g. the notebook's own training_step. The source code of
    both is part of the run's fingerprint (code_signature): after editing either, training starts a new run
    folder instead of resuming a run made with the old code.

    loss="dino" trains a head and a teacher inside the engine (self_distillation_step) and takes neither.
    With ema_momentum > 0 the exported weights (and the probes) are those of the EMA of the encoder."""
    if cfg.loss == "dino" and (objective is not None or step is not None):
        raise ValueError("loss='dino' is trained by the engine's self_distillation_step (a head, a teacher and a "
                         "centre): a custom objective or step cannot replace it. Pass neither, or choose another "
                         "loss.")
    device = pick_device(cfg.device)
    configure_backends(device)
    seed_all(cfg.seed)
    if data is None:
        data = prepare_data(load_splits(resolve_data_dir(cfg.data_dir or None)), device, cfg.max_train_images)
    n_train = len(data.train)
    if cfg.batch_size > n_train:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the training set ({n_train} images); "
                         f"use batch_size <= {n_train}.")
    steps_per_epoch = n_train // cfg.batch_size

    model = ImageEncoder(cfg.arch).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # What the optimizer trains: the encoder, and DINO's head (a module of its own: the model stays an
    # ImageEncoder, and only the encoder is exported).
    student = torch.nn.ModuleDict({"encoder": model})
    if cfg.loss == "dino":
        student["head"] = dino.DinoHead(model.proj_dim, num_prototypes=cfg.dino_prototypes).to(device)
    optimizer = optim.build_optimizer(cfg.optimizer, student, cfg.lr, cfg.weight_decay, device)
    # The EMA of the student: exported instead of the last weights, and DINO's teacher. The teacher runs forward
    # passes of its own, so its batch-norm statistics are its own; otherwise they are averaged (utils/ema.py).
    ema = ModelEMA(student, buffers="own" if cfg.loss == "dino" else "average") if cfg.ema_momentum > 0 else None
    exported = ema.model["encoder"] if ema else model       # what the probes measure and the export writes
    run_model = torch.compile(model) if cfg.compile else model
    view_cfgs = augment.default_views(cfg.global_views, cfg.local_views, cfg.local_size, cfg.aug_strength,
                                      cfg.crop_min_scale)
    code = code_signature(objective, step)                  # "" for the engine's own loss and step
    distiller = None
    if cfg.loss == "dino":
        distiller = dino.SelfDistillation(student["head"], ema.model, num_global=cfg.global_views,
                                          teacher_temperature=cfg.dino_teacher_temperature,
                                          student_temperature=cfg.dino_student_temperature,
                                          center_momentum=cfg.dino_center_momentum)
        objective, step = distiller, self_distillation_step
    else:
        objective = objective or make_objective(cfg)
        step = step or training_step
    autocast = autocast_context(device, cfg.precision)
    order_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)

    fingerprint = cfg.fingerprint(data.signature(), code)
    run_dir = run_dir_of(cfg, data.signature(), code)
    ckpt_dir = run_dir / "checkpoints"
    state = RunState()
    if cfg.resume and (latest := checkpoint.latest_checkpoint(ckpt_dir)):
        state = resume_from(latest, fingerprint, model, optimizer, order_gen, aug_gen, device,
                            head=student["head"] if distiller else None, ema=ema, distiller=distiller)
        print(f"Resuming {run_dir} from {latest.name}: step {state.step}, epoch {state.epoch}, "
              f"{state.elapsed_s / 60:.1f} min trained.")
    else:
        print(f"New run {run_dir} ({cfg.arch}, {cfg.loss}, batch {cfg.batch_size}, device {device}).")

    budget_s = cfg.time_budget_min * 60
    total_steps = cfg.epochs * steps_per_epoch
    progress = (lambda: state.elapsed_s / budget_s) if budget_s else (lambda: state.step / total_steps)

    def save() -> Path:
        return checkpoint.save_checkpoint(snapshot(state, model, optimizer, order_gen, aug_gen, cfg, fingerprint,
                                                   head=student["head"] if distiller else None, ema=ema,
                                                   distiller=distiller),
                                          ckpt_dir, state.step, keep=cfg.keep_checkpoints)

    def evaluate_now() -> None:
        record = {"epoch": state.epoch, "step": state.step, "elapsed_s": round(state.elapsed_s, 2)}
        record["val_loss"] = validation_loss(model, data.val.images, view_cfgs, objective, device,
                                             cfg.batch_size, cfg.seed + 2, autocast)
        record.update(probe_metrics(exported, data, cfg, device))
        state.history["eval"].append(record)
        progress_write(format_eval(record))

    bar = progress_bar(total=total_steps if not budget_s else None, initial=state.step, unit="step",
               disable=not cfg.progress, dynamic_ncols=True, desc=cfg.loss)
    window = LogWindow()
    last_ckpt_time = time.time()
    model.train()
    try:
        while progress() < 1.0:
            if state.order is None:
                state.order = epoch_order(n_train, order_gen)
            start = state.batch_in_epoch * cfg.batch_size
            batch = data.train_on_device[state.order[start:start + cfg.batch_size]]
            optim.set_lr(optimizer, cfg.lr * optim.lr_factor(progress(), cfg.warmup, cfg.final_lr_ratio))

            t0 = time.time()
            loss, z0 = run_training_step(step, run_model, batch, view_cfgs, objective, optimizer, aug_gen, autocast,
                                         cfg)
            if ema:
                ema.update(student, momentum=ema_momentum(progress(), start=cfg.ema_momentum, end=cfg.ema_momentum_end))
            state.step += 1
            state.batch_in_epoch += 1
            window.add(loss)
            end_of_epoch = state.batch_in_epoch == steps_per_epoch
            if state.step % cfg.log_every == 0 or end_of_epoch:
                record = window.flush(state, z0, optimizer, cfg.batch_size)   # the only host sync per step
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}",
                                rank=f"{record['eff_rank']:.0f}", epoch=state.epoch, refresh=False)
            state.elapsed_s += time.time() - t0
            bar.update(1)
            if budget_s and state.step % 10 == 0:
                bar.total = max(state.step + 1, int(state.step / max(progress(), 1e-9)))

            if end_of_epoch:
                state.history["train"].append({"epoch": state.epoch + 1, "step": state.step,
                                               "loss": state.epoch_loss_sum / steps_per_epoch,
                                               "lr": optimizer.param_groups[0]["lr"],
                                               "elapsed_s": round(state.elapsed_s, 2)})
                state.epoch, state.batch_in_epoch, state.order, state.epoch_loss_sum = state.epoch + 1, 0, None, 0.0
                finished = progress() >= 1.0
                if finished or (cfg.eval_every and state.epoch % cfg.eval_every == 0):
                    evaluate_now()
                if finished or (cfg.checkpoint_every and state.epoch % cfg.checkpoint_every == 0):
                    save()
                    last_ckpt_time = time.time()
                window.start = time.time()              # throughput excludes evaluation and saving
            if time.time() - last_ckpt_time > cfg.checkpoint_every_min * 60:
                window.flush(state, z0, optimizer, cfg.batch_size)
                save()
                last_ckpt_time = time.time()
    except KeyboardInterrupt:
        bar.close()
        window.flush(state, None, optimizer, cfg.batch_size)
        path = save()
        print(f"\nInterrupted at step {state.step}: checkpoint saved to {path}. Run the same settings again "
              f"to resume from it.")
        raise
    bar.close()
    if not state.history["eval"] or state.history["eval"][-1]["step"] != state.step:
        evaluate_now()
        save()
    weights_path = Path(cfg.export_path) if cfg.export_path else run_dir / "final_model.safetensors"
    # get_features' statistics from every training image, so the file loads strictly and needs nothing else
    features.fit_feature_statistics(exported, data.train.images, device=device)
    checkpoint.export_weights(exported, weights_path, metadata={"arch": cfg.arch, "loss": cfg.loss,
                                                                "fingerprint": fingerprint, "step": str(state.step),
                                                                "weights": "ema" if ema else "last"})
    metrics_path = write_metrics(run_dir / "training_metrics.json", cfg, state, fingerprint, device, data)
    print(f"Exported {weights_path} and {metrics_path} after {state.step} steps "
          f"({state.epoch} epochs, {state.elapsed_s / 60:.1f} min of training).")
    return TrainResult(exported, state.history, run_dir, weights_path, metrics_path, cfg)


class LogWindow:
    """Losses of the steps since the last log line, kept on the device until flushed (no per-step sync)."""

    def __init__(self):
        self.loss_sum, self.count, self.start = 0.0, 0, time.time()
        self.warned_collapse = False

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum, self.count = self.loss_sum + loss, self.count + 1

    def flush(self, state: RunState, z0, optimizer, batch_size: int) -> dict | None:
        """Add the window to the epoch's loss sum and, when embeddings are given, append a log record
        (mean loss, lr, images/s, collapse statistics) to the history. Raises TrainError on a NaN loss."""
        if self.count == 0:
            return None
        total = float(self.loss_sum)
        mean_loss = total / self.count
        if not math.isfinite(mean_loss):
            raise TrainError(f"loss became {mean_loss} at step {state.step}; lower lr or check the data "
                             f"(earlier checkpoints are kept).")
        state.epoch_loss_sum += total
        record = None
        if z0 is not None:
            rate = self.count * batch_size / max(time.time() - self.start, 1e-9)
            stats = {k: round(float(v), 4) for k, v in monitor.embedding_stats(z0).items()}
            warning = monitor.collapse_warning(stats)
            if warning and not self.warned_collapse:      # once per run: the statistics stay in the log
                progress_write(f"step {state.step}: {warning}")
                self.warned_collapse = True
            record = {"step": state.step, "loss": round(mean_loss, 5), "lr": optimizer.param_groups[0]["lr"],
                      "img_per_s": round(rate, 1), **stats}
            state.history["log"].append(record)
        self.loss_sum, self.count, self.start = 0.0, 0, time.time()
        return record


def run_training_step(step, model, batch, view_cfgs, objective, optimizer, generator, autocast, cfg):
    """step(...) (training_step, self_distillation_step or the caller's own) with an out-of-memory error turned
    into advice about the batch size."""
    try:
        return step(model, batch, view_cfgs, objective, optimizer, generator, autocast)
    except torch.OutOfMemoryError as error:
        optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        fits = largest_fitting_batch(lambda b: _trial_step(model, batch[:b], view_cfgs, objective, generator,
                                                           autocast), cfg.batch_size)
        advice = f"batch_size={fits} fits: run with batch_size={fits}" if fits else "not even batch_size=8 fits"
        raise TrainError(f"batch_size={cfg.batch_size} ran out of GPU memory ({_memory_note()}); {advice} "
                         f"(and scale lr with it). Another process on the GPU may also hold memory. The newest "
                         f"checkpoint is kept: the same settings resume from it once memory is free; another "
                         f"batch_size starts a new run.") from error


def _trial_step(model, batch, view_cfgs, objective, generator, autocast) -> None:
    views = augment.make_views(batch, view_cfgs, generator=generator)
    with autocast:
        loss = views_loss(model, views, objective, generator)
    loss.backward()
    model.zero_grad(set_to_none=True)


def largest_fitting_batch(try_batch, batch_size: int, smallest: int = 8) -> int:
    """The largest of batch_size/2, /4, ... (>= smallest) for which try_batch(b) does not run out of
    memory, or 0."""
    b = batch_size // 2
    while b >= smallest:
        try:
            try_batch(b)
            return b
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            b //= 2
    return 0


def _memory_note() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device"
    free, total = torch.cuda.mem_get_info()
    return f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"


def fit_batch_to_gpu(cfg: TrainConfig, data: TrainData, device: torch.device, *, objective=None, step=None,
                     echo: bool = True) -> TrainConfig:
    """cfg with batch_size and lr fitted to the memory the (shared) GPU has free now; cfg itself on the CPU.

    The step's memory is measured by trial steps of this very recipe, with the objective and step that train()
    will be given (utils.device.measure_step_memory); the largest batch that fits with the safety margin (cfg's,
    or a power of two below it) is chosen and lr scaled linearly with it (utils.device.fit_batch_to_memory, which
    prints one line). A batch whose run already has a checkpoint is taken first, so that a restarted session
    resumes instead of starting over with a new batch. The training images must already be on the device
    (prepare_data): their memory is then no longer free.
    """
    if device.type != "cuda":
        return cfg
    if cfg.loss == "dino":      # its step needs the head and the teacher that only train() builds
        print(f"GPU memory: not fitted for loss='dino' (the trial step covers projection losses only); "
              f"batch_size={cfg.batch_size} as set.")
        return cfg
    try:
        memory = measure_step_memory(lambda b: _memory_trial(cfg, data, device, b, objective, step), device)
    except torch.OutOfMemoryError as error:
        raise TrainError(f"not even the memory trial steps of batch_size {max(TRIAL_BATCHES)} fit on {device} "
                         f"({_memory_note()}): other processes hold the GPU. Wait for memory to free up "
                         f"(nvidia-smi lists them) or use a smaller arch.") from error
    signature, code = data.signature(), code_signature(objective, step)

    def has_checkpoint(batch_size: int) -> bool:
        fitted = dataclasses.replace(cfg, batch_size=batch_size, lr=cfg.lr * batch_size / cfg.batch_size)
        return checkpoint.latest_checkpoint(run_dir_of(fitted, signature, code) / "checkpoints") is not None

    choice = fit_batch_to_memory(min(cfg.batch_size, len(data.train)), cfg.lr, free_memory_bytes(device), memory,
                                 prefer=has_checkpoint, echo=echo)
    return dataclasses.replace(cfg, batch_size=choice.batch_size, lr=choice.lr)


def _memory_trial(cfg: TrainConfig, data: TrainData, device: torch.device, batch_size: int, objective=None,
                  step=None) -> None:
    """One full training step of cfg's recipe (model, optimizer, views, loss, update; the given objective and
    step, as train() would run them) on `batch_size` training images; everything it allocates is freed when it
    returns. Seeds nothing global: train() seeds itself."""
    model = ImageEncoder(cfg.arch).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = optim.build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, device)
    view_cfgs = augment.default_views(cfg.global_views, cfg.local_views, cfg.local_size, cfg.aug_strength,
                                      cfg.crop_min_scale)
    generator = torch.Generator(device=device).manual_seed(0)
    rows = torch.arange(batch_size, device=device) % len(data.train)     # exactly batch_size images, even from a tiny set
    (step or training_step)(model, data.train_on_device[rows], view_cfgs, objective or make_objective(cfg), optimizer,
                            generator, autocast_context(device, cfg.precision))


def run_dir_of(cfg: TrainConfig, data_signature: str, code_signature: str = "") -> Path:
    """The folder of cfg's run: out_dir/run_name, or out_dir/<loss>-<fingerprint of the settings, data and
    user-supplied code (code_signature)>."""
    return Path(cfg.out_dir) / (cfg.run_name or f"{cfg.loss}-{cfg.fingerprint(data_signature, code_signature)}")


def snapshot(state: RunState, model, optimizer, order_gen, aug_gen, cfg, fingerprint, *, head=None, ema=None,
             distiller=None) -> dict:
    """Everything needed to continue the run exactly where it is: with DINO also its head and centre, with an
    EMA the averaged weights (the teacher's, for DINO)."""
    return {
        "config": dataclasses.asdict(cfg), "fingerprint": fingerprint,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "head": head.state_dict() if head is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "dino": distiller.state_dict() if distiller is not None else None,
        "step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
        "order": state.order.cpu() if state.order is not None else None,
        "epoch_loss_sum": state.epoch_loss_sum, "elapsed_s": state.elapsed_s,
        "history": state.history, "rng": rng_states(order_gen, aug_gen),
    }


def resume_from(path: Path, fingerprint: str, model, optimizer, order_gen, aug_gen, device, *, head=None,
                ema=None, distiller=None) -> RunState:
    saved = checkpoint.load_checkpoint(path, map_location="cpu")
    if saved["fingerprint"] != fingerprint:
        raise TrainError(f"checkpoint {path} belongs to another run (fingerprint {saved['fingerprint']}, this "
                         f"run {fingerprint}): its settings, data or code differ. Use another run_name, or "
                         f"resume=False to start over in a new folder.")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    for name, piece in (("head", head), ("ema", ema), ("dino", distiller)):
        if piece is not None:
            if saved.get(name) is None:
                raise TrainError(f"checkpoint {path} holds no {name!r} state, which this run needs to resume "
                                 f"exactly; use resume=False to start over.")
            piece.load_state_dict(saved[name])
    restore_rng_states(saved["rng"], order_gen, aug_gen)
    order = saved["order"].to(device) if saved["order"] is not None else None
    return RunState(step=saved["step"], epoch=saved["epoch"], batch_in_epoch=saved["batch_in_epoch"],
                    order=order, epoch_loss_sum=saved["epoch_loss_sum"], elapsed_s=saved["elapsed_s"],
                    history=saved["history"])


def format_eval(r: dict) -> str:
    return (f"epoch {r['epoch']:>4} | val loss {r['val_loss']:.4f} | ID k-NN {r['id_knn']:.2f}% linear "
            f"{r['id_linear']:.2f}% | OOD k-NN {r['ood_knn']:.2f}% linear {r['ood_linear']:.2f}%")


def write_metrics(path: Path, cfg: TrainConfig, state: RunState, fingerprint: str, device, data) -> Path:
    """training_metrics.json: settings, where it ran, and the full history (train, eval, log)."""
    record = {
        "config": dataclasses.asdict(cfg), "fingerprint": fingerprint,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "steps": state.step, "epochs": state.epoch,
        "train_minutes": round(state.elapsed_s / 60, 3),
        "data": {"train": str(data.train.path), "n_train": len(data.train), "n_val": len(data.val),
                 "n_ood": len(data.ood)},
        "final": state.history["eval"][-1] if state.history["eval"] else None,
        **state.history,
    }
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("Settings (key=default):")
        for f in dataclasses.fields(TrainConfig):
            print(f"  {f.name}={f.default}")
        return 0
    try:
        cfg = parse_overrides(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
