"""Optimizers (AdamW, LARS) and the warmup + cosine learning-rate schedule.

The schedule is a pure function of training progress in [0, 1] (steps done / total steps, or elapsed
training seconds / time budget), evaluated every iteration. It has no state of its own, so a resumed run
continues the same curve from the step and elapsed time stored in its checkpoint.
"""
from __future__ import annotations

import math

import torch


def lr_factor(progress: float, warmup: float, final_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at `progress` in [0, 1].

    Linear warmup from 0 over the first `warmup` fraction (the first steps of a from-scratch run at full
    learning rate are what collapses it), then a half-cosine down to `final_ratio`.
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    span = max(1.0 - warmup, 1e-12)
    cosine = 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / span))
    return final_ratio + (1.0 - final_ratio) * cosine


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate to lr times the group's lr_scale (1 when it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# Parameters without weight decay although they have more than one dimension: a ViT's learned position
# embeddings (models.ViTBackbone.pos_embed) and a class token, if one is added. They are inputs added to the
# tokens, not weights that mix features: decay would pull the position code towards zero, i.e. towards no
# position information, at no gain in regularisation (DeiT and timm exclude them too).
NO_DECAY_NAMES = ("pos_embed", "cls_token")


def decays(name: str, p: torch.Tensor) -> bool:
    """Whether the parameter `name` (as in named_parameters) gets weight decay: weights of convolutions and
    linear layers do; biases, normalisation parameters (1-D) and NO_DECAY_NAMES do not."""
    return p.ndim > 1 and name.rsplit(".", 1)[-1] not in NO_DECAY_NAMES


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups of the trainable parameters, split by `decays`: with weight decay and LARS's adaptation, and
    without either (as in SimCLR/BYOL)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lars_adapt": True},
            {"params": no_decay, "weight_decay": 0.0, "lars_adapt": False}]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), as used by SimCLR and BYOL.

    For each parameter tensor in a group with lars_adapt=True: g <- g + wd * w, then
    g <- g * eta * ||w|| / ||g|| (when both norms are > 0), then heavy-ball momentum. 1-D parameters skip
    both the decay and the adaptation.
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 1e-6,
                 eta: float = 0.001):
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"invalid LARS settings lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}, eta={eta}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      lars_adapt=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars_adapt"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(name: str, model: torch.nn.Module, lr: float, weight_decay: float,
                    device: torch.device) -> torch.optim.Optimizer:
    """'adamw' (fused kernel on CUDA) or 'lars' over `param_groups(model)`."""
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: 'adamw', 'lars'")
