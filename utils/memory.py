"""GPU memory for a training recipe: the batch that fits what a shared GPU has free before a run
(`fit_batch_to_gpu`), and, when a step runs out mid-run, the batch that fits then (`batch_that_fits_now`) and the
error that names it (`out_of_memory_error`).
The recipe-free parts (measuring, choosing, halving) live in utils/device.py.

Tests: tests/test_device.py (the choice and its arithmetic), tests/test_train.py (out of memory mid-run).
"""
from __future__ import annotations

import dataclasses
import functools

import torch

from utils import augment, checkpoint
from utils.config import TrainConfig, run_dir_of
from utils.data import TrainData
from utils.device import (SMALLEST_BATCH, TRIAL_BATCHES, fit_batch_to_memory, free_memory_bytes,
                          largest_fitting_batch, measure_step_memory, memory_note)
from utils.run_state import TrainError
from utils.steps import (autocast_context, build_networks, code_signature, make_objective, training_step,
                         view_configs, views_loss)


def fit_batch_to_gpu(cfg: TrainConfig, data: TrainData, device: torch.device, *, step=None,
                     code: tuple = (), echo: bool = True) -> TrainConfig:
    """cfg with batch_size and lr fitted to the memory the (shared) GPU has free now; cfg itself on the CPU.

    The step's memory is measured by trial steps of this very recipe with `step` (the notebook's training_step;
    default: the engine's) on a fresh network and optimizer (utils.device.measure_step_memory); the largest batch
    that fits with the safety margin (cfg's, or a power of two below it) is chosen and lr scaled linearly with it
    (utils.device.fit_batch_to_memory, which prints one line). A batch whose run already has a checkpoint is
    taken first, so that a restarted session resumes instead of starting over with a new batch: `code` is what
    start_run will be given, which names the run's folder. The training images must already be on the device
    (prepare_data): their memory is then no longer free.
    """
    if device.type != "cuda":
        return cfg
    if cfg.loss == "dino":      # its step needs the head and the teacher that only train() builds
        print(f"GPU memory: not fitted for loss='dino' (the trial step covers projection losses only); "
              f"batch_size={cfg.batch_size} as set.")
        return cfg
    try:
        memory = measure_step_memory(lambda b: _memory_trial(cfg, data, device, b, step), device)
    except torch.cuda.OutOfMemoryError as error:
        raise TrainError(f"not even the memory trial steps of batch_size {max(TRIAL_BATCHES)} fit on {device} "
                         f"({memory_note()}): other processes hold the GPU. Wait for memory to free up "
                         f"(nvidia-smi lists them) or use a smaller arch.") from error
    signature, code = data.signature(), code_signature(*code)

    def has_checkpoint(batch_size: int) -> bool:
        fitted = dataclasses.replace(cfg, batch_size=batch_size, lr=cfg.lr * batch_size / cfg.batch_size)
        return checkpoint.latest_checkpoint(run_dir_of(fitted, signature, code) / "checkpoints") is not None

    choice = fit_batch_to_memory(min(cfg.batch_size, len(data.train)), cfg.lr, free_memory_bytes(device), memory,
                                 prefer=has_checkpoint, echo=echo)
    return dataclasses.replace(cfg, batch_size=choice.batch_size, lr=choice.lr)


def _memory_trial(cfg: TrainConfig, data: TrainData, device: torch.device, batch_size: int, step=None) -> None:
    """One full training step of cfg's recipe (a fresh network and optimizer, as build_networks makes them; the
    given step) on `batch_size` training images; everything it allocates is freed when it returns. Seeds
    nothing global."""
    model, _, optimizer = build_networks(cfg, device, with_head=False)
    generator = torch.Generator(device=device).manual_seed(0)
    rows = torch.arange(batch_size, device=device) % len(data.train)     # exactly batch_size images, even from a tiny set
    step = step or functools.partial(training_step, view_cfgs=view_configs(cfg), objective=make_objective(cfg),
                                     autocast=autocast_context(device, cfg.precision))
    step(model, data.train_on_device[rows], optimizer, generator)


def batch_that_fits_now(cfg: TrainConfig, model, batch, optimizer, objective, generator, autocast) -> int:
    """After a step ran out of GPU memory: the largest of batch_size/2, /4, ... whose forward and backward pass on
    this batch with cfg's views and `objective` fits now (trial passes, no update), or 0. For the advice of
    out_of_memory_error."""
    optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    views = view_configs(cfg)
    return largest_fitting_batch(lambda b: _trial_step(model, batch[:b], views, objective, generator, autocast),
                                 cfg.batch_size)


def out_of_memory_error(cfg: TrainConfig, fits: int) -> TrainError:
    """The error to raise when a training step ran out of GPU memory: it names the batch that fits now (`fits`,
    from batch_that_fits_now; 0 when none does) and says that the newest checkpoint is kept."""
    advice = (f"batch_size={fits} fits: run with batch_size={fits}" if fits else
              f"not even batch_size={SMALLEST_BATCH} fits")
    return TrainError(f"batch_size={cfg.batch_size} ran out of GPU memory ({memory_note()}); {advice} "
                      f"(and scale lr with it). Another process on the GPU may also hold memory. The newest "
                      f"checkpoint is kept: the same settings resume from it once memory is free; another "
                      f"batch_size starts a new run.")


def out_of_memory_error_on_ranks(cfg: TrainConfig, rank: int, size: int) -> TrainError:
    """The out-of-memory error under torchrun: no trial steps (a trial on one rank would wait for the others'
    collectives), the per-rank share named instead."""
    return TrainError(f"batch_size={cfg.batch_size} (the global batch: {cfg.batch_size // size} images on each of "
                      f"{size} ranks) ran out of GPU memory on rank {rank} ({memory_note()}); run with a smaller "
                      f"batch_size (and scale lr with it). The newest checkpoint is kept; another batch_size starts "
                      f"a new run.")


def _trial_step(model, batch, view_cfgs, objective, generator, autocast) -> None:
    views = augment.make_views(batch, view_cfgs, generator=generator)
    with autocast:
        loss = views_loss(model, views, objective, generator)
    loss.backward()
    model.zero_grad(set_to_none=True)
