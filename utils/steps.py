"""One training step and the pieces around it: views -> projections -> loss -> update.

`training_step` is what `train()` runs for every projection objective (the notebook's Section 3 shows it, and
may pass its own); `self_distillation_step` is DINO's. `make_objective` binds a config's loss settings;
`code_signature` hashes user-supplied step and loss functions into the run's fingerprint.
"""
from __future__ import annotations

import hashlib
import inspect

import numpy as np
import torch

from utils import augment, dino, losses
from utils.config import TrainConfig


def autocast_context(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


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
