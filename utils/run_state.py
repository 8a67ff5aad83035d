"""A training run's state in one place: what it holds (counters, the epoch's shuffle, the losses not yet logged,
the history), how a step and an epoch change it, and how a checkpoint saves and restores it exactly, with every
random generator and the state of the model, optimizer, EMA and DINO pieces.

Tests: tests/test_train.py (a killed or interrupted run resumes to the same history and weights).
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

    def add_step(self, loss: torch.Tensor) -> None:
        """One optimizer step done; its loss is summed on the device (no host sync per step)."""
        self.step += 1
        self.batch_in_epoch += 1
        self.window_loss = self.window_loss + loss
        self.window_steps += 1

    def take_window(self) -> tuple[float, int]:
        """(summed loss, steps) of the steps since the last log record, then an empty window: the one host sync."""
        total, steps = float(self.window_loss), self.window_steps
        self.epoch_loss_sum += total
        self.window_loss, self.window_steps = 0.0, 0
        return total, steps

    def end_epoch(self, steps_per_epoch: int, lr: float) -> None:
        """The epoch's record in history["train"], then a new epoch (a fresh shuffle is drawn when it starts)."""
        self.history["train"].append({"epoch": self.epoch + 1, "step": self.step,
                                      "loss": self.epoch_loss_sum / steps_per_epoch, "lr": lr,
                                      "elapsed_s": round(self.elapsed_s, 2)})
        self.epoch, self.batch_in_epoch, self.order, self.epoch_loss_sum = self.epoch + 1, 0, None, 0.0


def rng_states(generators: dict[str, torch.Generator]) -> dict:
    """Every random generator's state, in types torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    return {
        "python": list(_to_lists(random.getstate())),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **{name: generator.get_state() for name, generator in generators.items()},
    }


def restore_rng_states(states: dict, generators: dict[str, torch.Generator]) -> None:
    random.setstate(_to_tuples(states["python"]))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for key, generator in generators.items():
        generator.set_state(states[key])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


# The pieces of a run a checkpoint holds besides its state: "model" (the encoder that trains), "optimizer", and
# when the recipe has them "head" (DINO's), "ema" (the averaged weights; DINO's teacher) and "dino" (its centre).
PIECES = ("model", "optimizer", "head", "ema", "dino")


def snapshot(state: RunState, pieces: dict, generators: dict[str, torch.Generator], cfg, fingerprint: str) -> dict:
    """Everything needed to continue the run exactly where it is. pieces: {name in PIECES: object with
    state_dict(), or None when the recipe has no such piece}."""
    return {
        "config": dataclasses.asdict(cfg), "fingerprint": fingerprint,
        **{name: pieces[name].state_dict() if pieces[name] is not None else None for name in PIECES},
        "step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
        "order": state.order.cpu() if state.order is not None else None,
        "epoch_loss_sum": state.epoch_loss_sum, "elapsed_s": state.elapsed_s,
        # the losses not yet logged: a checkpoint taken mid-window (by time, or on an interrupt) then changes
        # nothing in the history of the run that resumes from it
        "window_loss": float(state.window_loss), "window_steps": state.window_steps,
        "history": state.history, "rng": rng_states(generators),
    }


def resume_from(path: Path, fingerprint: str, pieces: dict, generators: dict[str, torch.Generator],
                device) -> RunState:
    """Load the checkpoint at `path` into `pieces` and `generators` (snapshot's arguments) and return its state.
    TrainError when it belongs to another run or lacks a piece this run needs."""
    saved = checkpoint.load_checkpoint(path, map_location="cpu")
    if saved["fingerprint"] != fingerprint:
        raise TrainError(f"checkpoint {path} belongs to another run (fingerprint {saved['fingerprint']}, this "
                         f"run {fingerprint}): its settings, data or code differ. Use another run_name, or "
                         f"resume=False to start over in a new folder.")
    for name, piece in pieces.items():
        if piece is None:
            continue
        if saved.get(name) is None:
            raise TrainError(f"checkpoint {path} holds no {name!r} state, which this run needs to resume "
                             f"exactly; use resume=False to start over.")
        try:
            if name == "model":     # get_features' statistics are refitted before every probe and the export
                checkpoint.load_network_state(piece, saved[name], f"checkpoint {path} (model)",
                                              keep_statistics=False)
            else:
                piece.load_state_dict(saved[name])
        except RuntimeError as error:     # torch's mismatch errors, and CheckpointError (the EMA's encoder)
            raise TrainError(f"checkpoint {path}: its {name!r} state does not fit this run: {error}") from error
    restore_rng_states(saved["rng"], generators)
    order = saved["order"].to(device) if saved["order"] is not None else None
    return RunState(step=saved["step"], epoch=saved["epoch"], batch_in_epoch=saved["batch_in_epoch"],
                    order=order, epoch_loss_sum=saved["epoch_loss_sum"], elapsed_s=saved["elapsed_s"],
                    window_loss=saved["window_loss"], window_steps=saved["window_steps"], history=saved["history"])
