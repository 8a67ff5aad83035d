"""Everything a checkpoint must hold to continue the same run exactly: the counters, the epoch's shuffle, the
losses not yet logged, the history, every random generator, and the model, optimizer, EMA and DINO state.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils import checkpoint


class TrainError(RuntimeError):
    """A run cannot go on; the message says why and what to change."""


@dataclass
class RunState:
    step: int = 0                        # optimizer steps done
    epoch: int = 0                       # complete epochs done
    batch_in_epoch: int = 0              # steps done inside the current epoch
    order: torch.Tensor | None = None    # the current epoch's shuffle (N,)
    epoch_loss_sum: float = 0.0          # losses of the current epoch's logged steps
    window_loss: float | torch.Tensor = 0.0   # summed losses of the steps since the last log record (on the device)
    window_steps: int = 0                # how many steps window_loss holds
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
        # the losses not yet logged: a checkpoint taken mid-window (by time, or on an interrupt) then changes
        # nothing in the history of the run that resumes from it
        "window_loss": float(state.window_loss), "window_steps": state.window_steps,
        "history": state.history, "rng": rng_states(order_gen, aug_gen),
    }


def resume_from(path: Path, fingerprint: str, model, optimizer, order_gen, aug_gen, device, *, head=None,
                ema=None, distiller=None) -> RunState:
    saved = checkpoint.load_checkpoint(path, map_location="cpu")
    if saved["fingerprint"] != fingerprint:
        raise TrainError(f"checkpoint {path} belongs to another run (fingerprint {saved['fingerprint']}, this "
                         f"run {fingerprint}): its settings, data or code differ. Use another run_name, or "
                         f"resume=False to start over in a new folder.")
    checkpoint.load_network_state(model, saved["model"], f"checkpoint {path} (model)", keep_statistics=False)
    optimizer.load_state_dict(saved["optimizer"])
    for name, piece in (("head", head), ("ema", ema), ("dino", distiller)):
        if piece is not None:
            if saved.get(name) is None:
                raise TrainError(f"checkpoint {path} holds no {name!r} state, which this run needs to resume "
                                 f"exactly; use resume=False to start over.")
            try:
                piece.load_state_dict(saved[name])
            except RuntimeError as error:     # torch's mismatch errors, and CheckpointError (the EMA's encoder)
                raise TrainError(f"checkpoint {path}: its {name!r} state does not fit this run: {error}") from error
    restore_rng_states(saved["rng"], order_gen, aug_gen)
    order = saved["order"].to(device) if saved["order"] is not None else None
    return RunState(step=saved["step"], epoch=saved["epoch"], batch_in_epoch=saved["batch_in_epoch"],
                    order=order, epoch_loss_sum=saved["epoch_loss_sum"], elapsed_s=saved["elapsed_s"],
                    # checkpoints written before the window was saved were always taken with it empty
                    window_loss=saved.get("window_loss", 0.0), window_steps=saved.get("window_steps", 0),
                    history=saved["history"])
