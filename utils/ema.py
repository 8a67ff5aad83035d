"""An exponential moving average (EMA) of a model's weights: Polyak averaging during training, and the teacher of
self-distillation (DINO).

After every optimizer step, each averaged weight moves a fraction (1 - momentum) of the way to the trained one:

    ema <- momentum * ema + (1 - momentum) * weight

With momentum 0.996 the average spans the last few hundred steps, smoothing out the noise of single updates; the
momentum rises to 1 on a half cosine over the run (BYOL, DINO), so that at the end the average stops moving
instead of chasing the last, smallest updates.

Batch-norm statistics (buffers) are not trained by the optimizer and follow one of two policies:
- "average" (the default, as timm's ModelEmaV2): running means and variances follow the same average as the
  weights, which pairs the averaged weights with statistics of the same stretch of training (copying them would
  pair them with the latest weights' statistics). num_batches_tracked is copied.
- "own": left alone, because the averaged model runs forward passes of its own in training mode (DINO's teacher
  on the global views), which fit its running statistics to its own weights.
Other buffers are never touched: training does not produce them (the ImageEncoder's feature statistics are
fitted on the averaged model itself, utils/features.py).

Example (as utils/train.py does: the student is a ModuleDict holding the encoder, and DINO's head when there is one):
    student = torch.nn.ModuleDict({"encoder": model})
    ema = ModelEMA(student)                    # after building the model, before training
    ...optimizer.step()
    ema.update(student, momentum=ema_momentum(progress, start=0.996, end=1.0))
    export_encoder(ema.model["encoder"], "final_model.safetensors")    # utils.checkpoint
"""
from __future__ import annotations

import copy
import math

import torch

from utils.checkpoint import load_network_state

BUFFER_POLICIES = ("average", "own")


def ema_momentum(progress: float, *, start: float, end: float = 1.0) -> float:
    """The EMA momentum at `progress` in [0, 1] of the run: `start` at 0, rising to `end` at 1 on a half cosine
    (BYOL, Grill et al. 2020, sec. 3.2; DINO):  end - (end - start) * (1 + cos(pi * progress)) / 2.
    start == end gives a fixed momentum."""
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0.0 <= start <= 1.0:
        raise ValueError(f"ema_momentum: start must be in [0, 1], got {start!r}")
    if isinstance(end, bool) or not isinstance(end, (int, float)) or not start <= end <= 1.0:
        raise ValueError(f"ema_momentum: end must be in [start, 1] = [{start}, 1], got {end!r}")
    progress = min(max(float(progress), 0.0), 1.0)
    return end - (end - start) * (1.0 + math.cos(math.pi * progress)) / 2.0


class ModelEMA:
    """An averaged copy of `model`, updated with `update(model, momentum=...)` after each optimizer step.

    `ema.model` is a deep copy of the model (same class, same state-dict keys: an averaged ImageEncoder loads
    strictly into `ImageEncoder(arch)`) that never requires gradients; its buffers follow `buffers` ("average"
    or "own", see the module's docstring). Save and restore it with state_dict() / load_state_dict() so that a
    resumed run continues the same average.
    """

    def __init__(self, model: torch.nn.Module, *, buffers: str = "average"):
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"ModelEMA: model must be a torch.nn.Module, got {type(model).__name__}")
        if buffers not in BUFFER_POLICIES:
            raise ValueError(f"ModelEMA: buffers must be one of {BUFFER_POLICIES}, got {buffers!r}")
        self.buffers = buffers
        self.model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, *, momentum: float) -> None:
        """ema <- momentum * ema + (1 - momentum) * model, for every parameter (and batch norm's running
        statistics when buffers="average"). momentum 0 copies the model; momentum 1 leaves the average unchanged."""
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"ModelEMA.update: momentum must be in [0, 1], got {momentum!r}")
        averaged, current = list(self.model.parameters()), list(model.parameters())
        if len(averaged) != len(current):
            raise ValueError(f"ModelEMA.update: the model has {len(current)} parameters, the average "
                             f"{len(averaged)}: pass the model the average was made from")
        # One fused kernel for all tensors (as torch.optim.swa_utils): lerp(a, b, w) = (1 - w) * a + w * b.
        torch._foreach_lerp_(averaged, current, 1.0 - momentum)
        if self.buffers == "average":
            for (name, mine), theirs in zip(self.model.named_buffers(), model.buffers()):
                leaf = name.rsplit(".", 1)[-1]
                if leaf in ("running_mean", "running_var"):
                    mine.lerp_(theirs, 1.0 - momentum)
                elif leaf == "num_batches_tracked":
                    mine.copy_(theirs)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Strict, except for get_features' statistics, left to be refitted (utils.checkpoint.load_network_state)."""
        load_network_state(self.model, state, "EMA state", keep_statistics=False)
