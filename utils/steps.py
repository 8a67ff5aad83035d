"""The engine's own pieces of a training step, for `python -m utils.train` and the benchmarks: views ->
projections -> loss -> update. The notebook's Sections 3 and 4 write their own `training_step` and loss with the
same contract, and its Section 5 runs the loop with them:

    training_step(model, batch_uint8 (B, 64, 64, 3) on the device, optimizer, generator) -> (loss, z0)

Here: `build_networks` (the encoder, DINO's head and the optimizer of a recipe), `make_objective` (a recipe's loss
with its settings bound), `training_step` and DINO's `self_distillation_step` (their views, objective and
autocast bound with functools.partial), `validation_loss`, and `code_signature`, which puts the source of the
caller's functions and the optimizer's settings into the run's fingerprint.

Tests: tests/test_train.py (the engine), tests/test_notebook.py (the notebook's own step and loss).
"""
from __future__ import annotations

import hashlib
import inspect
import json

import numpy as np
import torch

from models import ImageEncoder
from utils import augment, dino, losses, optim
from utils.config import TrainConfig


def autocast_context(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


def project_views(model, views: list[torch.Tensor]) -> torch.Tensor:
    """Projections of every view, (V, B, proj_dim). Views of the same size go through the model together
    (one forward for both global views), which is faster than one forward per view."""
    batch = views[0].shape[0]
    out = [None] * len(views)
    for size in sorted({v.shape[-1] for v in views}, reverse=True):
        index = [i for i, v in enumerate(views) if v.shape[-1] == size]
        _, z = model(torch.cat([views[i] for i in index]))
        for j, i in enumerate(index):
            out[i] = z[j * batch:(j + 1) * batch]
    return torch.stack(out)


def view_configs(cfg: TrainConfig) -> list:
    """The recipe's views (augment.default_views): global_views of 64 px, local_views of local_size px."""
    return augment.default_views(cfg.global_views, cfg.local_views, cfg.local_size, cfg.aug_strength,
                                 cfg.crop_min_scale)


def build_networks(cfg: TrainConfig, device: torch.device, *, with_head: bool = True):
    """(model, head, optimizer) of cfg's recipe on `device`: the encoder, DINO's prototype head (None for the
    other objectives, or with_head=False) and the optimizer over both (optim.build_optimizer)."""
    model = ImageEncoder(cfg.arch).to(device)
    head = None
    if cfg.loss == "dino" and with_head:
        head = dino.DinoHead(model.proj_dim, num_prototypes=cfg.dino_prototypes).to(device)
    trained = torch.nn.ModuleDict({"encoder": model, **({"head": head} if head is not None else {})})
    return model, head, optim.build_optimizer(cfg.optimizer, trained, cfg.lr, cfg.weight_decay, device)


def make_objective(cfg: TrainConfig):
    """loss(z (V, B, D), generator) -> scalar, with the config's hyper-parameters bound."""
    if cfg.loss == "dino":
        raise ValueError("loss='dino' is not a function of the projections alone: it needs its head and teacher, "
                         "which train() builds and runs in self_distillation_step. Use train(cfg) for it.")
    fn = losses.get_loss(cfg.loss)
    if cfg.loss == "ntxent":
        return lambda z, generator: fn(z, temperature=cfg.temperature, decoupled=cfg.decoupled)
    if cfg.loss == "lejepa":
        return lambda z, generator: fn(z, lambd=cfg.lejepa_lambda, num_global=cfg.global_views,
                                       generator=generator)
    return lambda z, generator: fn(z)


def training_step(model, batch_uint8, optimizer, generator, *, view_cfgs, objective, autocast):
    """Views -> projections -> loss -> update. Returns (loss as a 0-d tensor, projections of view 0), detached."""
    views = augment.make_views(batch_uint8, view_cfgs, generator=generator)
    with autocast:
        z = project_views(model, views)
        loss = objective(z.float(), generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), z[0].detach()


def self_distillation_step(model, batch_uint8, optimizer, generator, *, view_cfgs, objective, autocast):
    """DINO's step (objective: the run's dino.SelfDistillation): the student (model + its head) sees every view,
    the teacher (the EMA, which the run updates after this step) sees the global views only, without gradient.
    Returns (loss as a 0-d tensor, projections of view 0), like training_step."""
    distiller = objective
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
def validation_loss(model, images: np.ndarray, view_cfgs, objective, *, batch_size: int, seed: int,
                    autocast) -> float:
    """The self-supervised loss on held-out uint8 images (N, 64, 64, 3), in eval mode, on the model's device,
    with a fixed augmentation seed so that values are comparable across evaluations. DINO's teacher is put in
    eval mode too: in training mode its batch-norm statistics (which are exported) would learn from validation
    images. Every module's mode is restored afterwards."""
    device = next(model.parameters()).device
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


# An optimizer's settings that do not change what it computes (implementation switches), or that the schedule
# sets every step (lr): left out of the run's fingerprint.
_NOT_SETTINGS = ("params", "lr", "initial_lr", "fused", "foreach", "capturable", "differentiable")


def optimizer_signature(optimizer: torch.optim.Optimizer) -> str:
    """The optimizer's class and each group's settings and size (which tensors get weight decay), as text."""
    groups = [{"tensors": len(g["params"]), **{k: v for k, v in g.items() if k not in _NOT_SETTINGS}}
              for g in optimizer.param_groups]
    return type(optimizer).__name__ + json.dumps(groups, sort_keys=True, default=str)


def code_signature(*pieces) -> str:
    """A short hash of what the caller wrote and the recipe does not say: the source of its functions (the
    notebook's custom_loss_function, training_step and learning_rate) and its optimizer's settings. Part of the
    run's fingerprint: after editing one of them, training starts a new run folder instead of resuming a run
    made with the old code. "" when nothing is given (the engine's own functions).

    When a function's source cannot be read (typed into an interactive shell, a builtin, a C extension), its
    qualified name stands in, and a note says so: editing it then does not change the fingerprint."""
    parts = []
    for piece in pieces:
        if piece is None:
            continue
        if isinstance(piece, torch.optim.Optimizer):
            parts.append(optimizer_signature(piece))
            continue
        try:
            parts.append(inspect.getsource(piece if inspect.isroutine(piece) else type(piece)))
        except (OSError, TypeError):
            name = (f"{getattr(piece, '__module__', None) or '?'}."
                    f"{getattr(piece, '__qualname__', type(piece).__qualname__)}")
            print(f"note: the source of {name} is not available, so the run's fingerprint uses its name: editing "
                  f"it will not start a new run folder (set run_name or resume=False to start one).")
            parts.append(name)
    return hashlib.sha1("\n\n".join(parts).encode()).hexdigest()[:8] if parts else ""
