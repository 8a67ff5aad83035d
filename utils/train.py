"""The training engine: `train(cfg)` is the whole schedule, a loop of a few lines over a TrainingRun (start_run,
train_epoch, evaluate, save, finish), which the notebook's Section 5 runs as it is.

Where its pieces live: the settings and the run's folder in utils/config.py; one step (views -> projections ->
loss -> update) in utils/steps.py; what a checkpoint holds in utils/run_state.py; GPU memory (fitting the batch,
out-of-memory advice) in utils/memory.py; the data on the device in utils/data.py; then augment, losses, probes,
checkpoint, optim, monitor, ema and dino, one concern each.

Command line (same code as the notebook, for long runs outside a browser):

    python -m utils.train loss=ntxent epochs=100 batch_size=512
    python -m utils.train time_budget_min=20 arch=resnet18_s2 data_dir=/path/to/data
    torchrun --standalone --nproc_per_node=2 -m utils.train ...    # data-parallel (utils/distributed.py)

A run lives in `<out_dir>/<run_name>/` (run_name defaults to the objective plus a fingerprint of every
setting that changes the result). Running the same settings again resumes from the newest checkpoint there.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import ImageEncoder
from utils import checkpoint, dino, monitor, optim, probes
from utils.config import LOSS_NAMES, TrainConfig, parse_overrides, run_dir_of
from utils.data import (TrainData, epoch_order, load_splits, prepare_data, resolve_data_dir, spread_rows,
                        training_data_metadata)
from utils.device import configure_backends, largest_fitting_batch, pick_device
from utils.distributed import (World, barrier, broadcast_float, init_world, is_main_process, same_on_every_rank,
                               wrap_for_ranks)
from utils.ema import ModelEMA, ema_momentum
from utils.features import fit_feature_statistics
from utils.memory import batch_that_fits_now, fit_batch_to_gpu, out_of_memory_error, out_of_memory_error_on_ranks
from utils.progress import progress_bar, progress_write
from utils.run_setup import build_run
from utils.run_state import RunState, TrainError, resume_from, snapshot
from utils.steps import (autocast_context, code_signature, make_objective, project_views, self_distillation_step,
                         training_step, validation_loss)

# The engine's names, importable from here as before the split (the notebook and the benchmarks use them).
__all__ = ["LOSS_NAMES", "TrainConfig", "TrainData", "TrainError", "TrainResult", "autocast_context",
           "code_signature", "fit_batch_to_gpu", "largest_fitting_batch", "make_objective", "parse_overrides",
           "prepare_data", "probe_metrics", "project_views", "run_dir_of", "seed_all", "start_run", "train",
           "training_step", "TrainingRun"]


def seed_all(seed: int) -> None:
    """The course's seed_all: Python, NumPy and PyTorch (CPU and every GPU) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def probe_metrics(model, data: TrainData, cfg: TrainConfig, device) -> dict[str, float]:
    """Fast probes (percent) under the grader's protocol on the current model (probes.evaluate_protocol): ID fit
    on train (at most eval_max_train images, spread_rows), scored on val; OOD fit/scored on the course's 80/20
    split. The model's feature statistics must be fitted first (TrainingRun.evaluate does it, as a line of its own); this only
    measures, it changes nothing in the model."""
    fit_rows = spread_rows(len(data.train), cfg.eval_max_train)
    encode = lambda images: probes.encode_images(model, images, device=device)  # noqa: E731
    result = probes.evaluate_protocol((encode(data.train.images[fit_rows]), data.train.labels[fit_rows]),
                                      (encode(data.val.images), data.val.labels),
                                      (encode(data.ood.images), data.ood.labels),
                                      fast=True, progress=False, device=device, max_iter=cfg.eval_linear_iters)
    return {key: getattr(result, key) for key in ("id_knn", "id_linear", "ood_knn", "ood_linear")}


def log_record(step: int, mean_loss: float, optimizer, z0: torch.Tensor, *, images_per_s: float) -> dict:
    """One line of history["log"]: the mean loss since the last record, the learning rate, the throughput and the
    collapse statistics of this step's projections z0 (B, D) (utils/monitor.py)."""
    stats = {k: round(float(v), 4) for k, v in monitor.embedding_stats(z0).items()}
    return {"step": step, "loss": round(mean_loss, 5), "lr": optimizer.param_groups[0]["lr"],
            "img_per_s": round(images_per_s, 1), **stats}


def format_eval(r: dict) -> str:
    return (f"epoch {r['epoch']:>4} | val loss {r['val_loss']:.4f} | ID k-NN {r['id_knn']:.2f}% linear "
            f"{r['id_linear']:.2f}% | OOD k-NN {r['ood_knn']:.2f}% linear {r['ood_linear']:.2f}%")


def write_metrics(path: Path, cfg: TrainConfig, state: RunState, fingerprint: str, device, data,
                  world: World = World()) -> Path:
    """training_metrics.json: settings, where it ran (device, world size and backend), and the full history
    (train, eval, log)."""
    record = {
        "config": dataclasses.asdict(cfg), "fingerprint": fingerprint,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, **world.record(), "steps": state.step, "epochs": state.epoch,
        "train_minutes": round(state.elapsed_s / 60, 3),
        "data": {"train": str(data.train.path), "n_train": len(data.train), "n_val": len(data.val),
                 "n_ood": len(data.ood), "trained_on": training_data_metadata(data)["trained_on"]},
        "final": state.history["eval"][-1] if state.history["eval"] else None,
        **state.history,
    }
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
    return path


@dataclass
class TrainResult:
    model: ImageEncoder
    history: dict
    run_dir: Path
    weights_path: Path
    metrics_path: Path
    config: TrainConfig


def train(cfg: TrainConfig, data: TrainData | None = None, objective=None, step=None) -> TrainResult:
    """Train `cfg.arch` with `cfg.loss` on data (loaded from cfg.data_dir when not given); resume when a
    checkpoint of the same run exists; evaluate, checkpoint and finally export final_model.safetensors.

    `objective(z (V, B, D), generator) -> scalar` replaces the loss built from cfg (make_objective), e.g. the
    notebook's custom_loss_function. `step(model, batch_uint8, view_cfgs, objective, optimizer, generator,
    autocast) -> (loss, z0)` replaces training_step, e.g. the notebook's own training_step. The source code of
    both is part of the run's fingerprint (code_signature): after editing either, training starts a new run
    folder instead of resuming a run made with the old code.

    loss="dino" trains a head and a teacher inside the engine (self_distillation_step) and takes neither.
    With ema_momentum > 0 the exported weights (and the probes) are those of the EMA of the encoder.

    The loop below is the whole schedule; the notebook's Section 5 runs these same lines (tests/test_notebook.py
    checks that they stay the same)."""
    run = start_run(cfg, data, objective=objective, step=step)
    while not run.finished:
        run.train_epoch()                   # one epoch, or until the time budget ends
        if run.due(cfg.eval_every):
            run.evaluate()                  # the probes, one line
        if run.due(cfg.checkpoint_every):
            run.save()                      # an atomic checkpoint
    return run.finish()                     # last probes and checkpoint, statistics, the export


def start_run(cfg: TrainConfig, data: TrainData | None = None, objective=None, step=None) -> "TrainingRun":
    """Build cfg's run (train()'s arguments), resumed from its newest checkpoint when one exists. Prints which."""
    if cfg.loss == "dino" and (objective is not None or step is not None):
        raise ValueError("loss='dino' is trained by the engine's self_distillation_step (a head, a teacher and a "
                         "centre): a custom objective or step cannot replace it. Pass neither, or choose another "
                         "loss.")
    device = pick_device(cfg.device)
    configure_backends(device)
    seed_all(cfg.seed)
    if data is None:
        data_dir = resolve_data_dir(cfg.data_dir or None, verbose=is_main_process())
        data = prepare_data(load_splits(data_dir), device, cfg.max_train_images)
    if cfg.batch_size > len(data.train):
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the training set ({len(data.train)} images); "
                         f"use batch_size <= {len(data.train)}.")
    return TrainingRun(cfg, data, device, objective, step)


def _saves_on_interrupt(method):
    """An interrupt (Ctrl+C, the notebook's stop button) inside `method` saves a checkpoint first, then goes on."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except KeyboardInterrupt:
            self.bar.close()
            path = self.save()
            self.say(f"\nInterrupted at step {self.state.step}: checkpoint saved to {path}. Run the same settings "
                     f"again to resume from it.")
            raise
    return wrapper


class TrainingRun:
    """One run, driven epoch by epoch (train() and the notebook's Section 5 run the same loop over it):
    `train_epoch`, `evaluate`, `save`, and `finish` (the export). `finished` is True once the epochs or the time
    budget are spent; `due(every)` says whether this epoch is one to evaluate or save at."""

    def __init__(self, cfg: TrainConfig, data: TrainData, device, objective=None, step=None):
        self.cfg, self.data, self.device = cfg, data, device
        # One process, or this rank of a torchrun launch (utils/distributed.py): rank 0 prints, writes and probes.
        self.world = init_world(device, cfg.dist_timeout_min)
        self.steps_per_epoch = len(data.train) // cfg.batch_size
        parts = build_run(cfg, device)      # the model, the student (+ DINO's head), the optimizer, the views
        self.model, self.student, self.optimizer = parts.model, parts.student, parts.optimizer
        self.view_cfgs = parts.view_cfgs
        # The EMA of the student: exported instead of the last weights, and DINO's teacher. The teacher runs
        # forward passes of its own, so its batch-norm statistics are its own; otherwise they are averaged.
        self.ema = (ModelEMA(self.student, buffers="own" if cfg.loss == "dino" else "average")
                    if cfg.ema_momentum > 0 else None)
        self.exported = self.ema.model["encoder"] if self.ema else self.model   # what probes and export see
        # What the step calls: the model, or under torchrun this rank's share of it (DDP) with the outputs of the
        # whole global batch gathered back, so that every loss sees the global batch.
        self.run_model = wrap_for_ranks(torch.compile(self.model) if cfg.compile else self.model, self.world, device,
                                        cfg.batch_size, cfg.sync_bn)
        # "" for the engine's own loss and step in one process; the world size where it changes the result
        code = code_signature(objective, step) + self.world.result_tag(cfg.sync_bn)
        self.distiller = None
        if cfg.loss == "dino":
            self.distiller = dino.SelfDistillation(self.student["head"], self.ema.model, num_global=cfg.global_views,
                                                   teacher_temperature=cfg.dino_teacher_temperature,
                                                   student_temperature=cfg.dino_student_temperature,
                                                   center_momentum=cfg.dino_center_momentum)
            self.objective, self.step_fn = self.distiller, self_distillation_step
        else:
            self.objective, self.step_fn = objective or make_objective(cfg), step or training_step
        self.head = self.student["head"] if self.distiller else None
        self.autocast = autocast_context(device, cfg.precision)
        self.order_gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)

        self.fingerprint = cfg.fingerprint(data.signature(), code)
        self.run_dir = run_dir_of(cfg, data.signature(), code)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.state = RunState()
        if cfg.resume and (latest := checkpoint.latest_checkpoint(self.ckpt_dir)):
            self.state = resume_from(latest, self.fingerprint, self.model, self.optimizer, self.order_gen,
                                     self.aug_gen, device, head=self.head, ema=self.ema, distiller=self.distiller)
            self.say(f"Resuming {self.run_dir} from {latest.name}: step {self.state.step}, epoch {self.state.epoch}, "
                     f"{self.state.elapsed_s / 60:.1f} min trained.")
        else:
            ranks = f", {self.world.size} ranks ({self.world.backend})" if self.world.distributed else ""
            self.say(f"New run {self.run_dir} ({cfg.arch}, {cfg.loss}, batch {cfg.batch_size}, device {device}{ranks}).")
        # Every rank must continue from the same step: each reads the newest checkpoint of its own out_dir, which
        # across machines must be one shared folder.
        same_on_every_rank(self.state.step, self.world, device, f"the step each rank resumes from (out_dir "
                           f"{cfg.out_dir} must be one folder that every rank sees)")
        self.last_eval_step = self.state.history["eval"][-1]["step"] if self.state.history["eval"] else None
        self.budget_s = cfg.time_budget_min * 60
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.bar = progress_bar(total=self.total_steps if not self.budget_s else None, initial=self.state.step,
                                unit="step", disable=not (cfg.progress and self.world.is_main), dynamic_ncols=True,
                                desc=cfg.loss)
        self.last_ckpt_time = time.time()
        self.warned_collapse = False

    def say(self, text: str) -> None:
        """Print, on rank 0 only."""
        if self.world.is_main:
            print(text)

    def progress(self) -> float:
        """How much of the run is done, 0 to 1: training time over the budget, or steps over all epochs' steps."""
        return self.state.elapsed_s / self.budget_s if self.budget_s else self.state.step / self.total_steps

    @property
    def finished(self) -> bool:
        return self.progress() >= 1.0

    @property
    def epoch(self) -> int:
        """Complete epochs done."""
        return self.state.epoch

    def due(self, every: int) -> bool:
        """True right after every `every`-th epoch, unless the run is finished (finish() evaluates and saves)."""
        return bool(every) and self.state.epoch % every == 0 and not self.finished

    def save(self) -> Path:
        """An atomic checkpoint of everything needed to continue exactly (utils/run_state.py); rank 0 writes it
        (every rank holds the same state)."""
        if not self.world.is_main:
            return checkpoint.checkpoint_path(self.ckpt_dir, self.state.step)
        path = checkpoint.save_checkpoint(snapshot(self.state, self.model, self.optimizer, self.order_gen,
                                                   self.aug_gen, self.cfg, self.fingerprint, head=self.head,
                                                   ema=self.ema, distiller=self.distiller),
                                          self.ckpt_dir, self.state.step, keep=self.cfg.keep_checkpoints)
        self.last_ckpt_time = time.time()
        return path

    @_saves_on_interrupt
    def evaluate(self) -> dict:
        """The validation loss and the probes of the model as it is now, one printed line; also in history. Rank 0
        evaluates; the other ranks wait for it (and keep no record: rank 0's history is the one written)."""
        cfg, data, state = self.cfg, self.data, self.state
        self.last_eval_step = state.step
        if not self.world.is_main:
            barrier(self.world)
            return {}
        record = {"epoch": state.epoch, "step": state.step, "elapsed_s": round(state.elapsed_s, 2)}
        record["val_loss"] = validation_loss(self.model, data.val.images, self.view_cfgs, self.objective,
                                             self.device, cfg.batch_size, cfg.seed + 2, self.autocast)
        # get_features' statistics for the current weights, on the probes' training rows, then the probes
        fit_feature_statistics(self.exported, data.train.images[spread_rows(len(data.train), cfg.eval_max_train)],
                               device=self.device)
        record.update(probe_metrics(self.exported, data, cfg, self.device))
        state.history["eval"].append(record)
        progress_write(format_eval(record))
        barrier(self.world)
        return record

    @_saves_on_interrupt
    def train_epoch(self) -> None:
        """Optimizer steps until the end of the epoch (or of the time budget), with a log record every
        log_every steps and a checkpoint every checkpoint_every_min minutes."""
        cfg, state, data = self.cfg, self.state, self.data
        window_start = time.time()                  # throughput excludes evaluation and saving
        self.model.train()
        while not self.finished:
            if time.time() - self.last_ckpt_time > cfg.checkpoint_every_min * 60:
                self.save()                            # holds the unlogged losses: the history does not change
            if state.order is None:
                state.order = epoch_order(len(data.train), self.order_gen)
            start = state.batch_in_epoch * cfg.batch_size
            batch = data.train_on_device[state.order[start:start + cfg.batch_size]]
            optim.set_lr(self.optimizer, cfg.lr * optim.lr_factor(self.progress(), cfg.warmup, cfg.final_lr_ratio))

            t0 = time.time()
            try:
                loss, z0 = self.step_fn(self.run_model, batch, self.view_cfgs, self.objective, self.optimizer,
                                        self.aug_gen, self.autocast)
            except torch.cuda.OutOfMemoryError as error:
                if self.world.distributed:
                    raise out_of_memory_error_on_ranks(cfg, self.world.rank, self.world.size) from error
                # trial steps of batch_size/2, /4, ... on this batch: the batch that fits now, for the advice
                fits = batch_that_fits_now(cfg, self.run_model, batch, self.view_cfgs, self.objective,
                                           self.optimizer, self.aug_gen, self.autocast)
                raise out_of_memory_error(cfg, fits) from error
            if self.ema:
                self.ema.update(self.student, momentum=ema_momentum(self.progress(), start=cfg.ema_momentum,
                                                                    end=cfg.ema_momentum_end))
            state.step += 1
            state.batch_in_epoch += 1
            state.window_loss = state.window_loss + loss      # summed on the device: no host sync per step
            state.window_steps += 1
            end_of_epoch = state.batch_in_epoch == self.steps_per_epoch
            if state.step % cfg.log_every == 0 or end_of_epoch:
                self._log(z0, window_start)
                window_start = time.time()
            state.elapsed_s += time.time() - t0             # after the sync: on a GPU the step's work is done
            if self.budget_s:       # rank 0's clock decides the schedule and the end for every rank (under
                # torchrun a host sync per step: its cost on GPUs is not measured)
                state.elapsed_s = broadcast_float(state.elapsed_s, self.world, self.device)
            self.bar.update(1)
            if self.budget_s and state.step % 10 == 0:
                self.bar.total = max(state.step + 1, int(state.step / max(self.progress(), 1e-9)))
            if end_of_epoch:
                state.history["train"].append({"epoch": state.epoch + 1, "step": state.step,
                                               "loss": state.epoch_loss_sum / self.steps_per_epoch,
                                               "lr": self.optimizer.param_groups[0]["lr"],
                                               "elapsed_s": round(state.elapsed_s, 2)})
                state.epoch, state.batch_in_epoch, state.order, state.epoch_loss_sum = state.epoch + 1, 0, None, 0.0
                return

    def _log(self, z0: torch.Tensor, window_start: float) -> None:
        """One history["log"] record of the steps since the last one (the one host sync), the progress bar's
        figures, and the collapse alarm (once per run)."""
        state = self.state
        window_sum, steps = float(state.window_loss), state.window_steps
        if not math.isfinite(window_sum):
            raise TrainError(f"loss became {window_sum / steps} at step {state.step}; lower lr or check the data "
                             f"(earlier checkpoints are kept).")
        state.epoch_loss_sum += window_sum
        state.window_loss, state.window_steps = 0.0, 0
        record = log_record(state.step, window_sum / steps, self.optimizer, z0,
                            images_per_s=steps * self.cfg.batch_size / max(time.time() - window_start, 1e-9))
        state.history["log"].append(record)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}",
                             rank=f"{record['eff_rank']:.0f}", epoch=state.epoch, refresh=False)
        warning = monitor.collapse_warning(record)
        if warning and not self.warned_collapse and self.world.is_main:
            progress_write(f"step {state.step}: {warning}")
            self.warned_collapse = True

    def finish(self) -> TrainResult:
        """The end of the run, in this one place: the last evaluation and checkpoint (a resumed run that had
        already finished has both), then get_features' statistics from every training image, then the export
        and training_metrics.json (by rank 0; the other ranks wait for it)."""
        cfg, state, data = self.cfg, self.state, self.data
        self.bar.close()
        if self.last_eval_step != state.step:       # the same on every rank (only rank 0 keeps the records)
            self.evaluate()
            self.save()
        weights_path = Path(cfg.export_path) if cfg.export_path else self.run_dir / "final_model.safetensors"
        metrics_path = self.run_dir / "training_metrics.json"
        if not self.world.is_main:
            barrier(self.world)
            return TrainResult(self.exported, state.history, self.run_dir, weights_path, metrics_path, cfg)
        fit_feature_statistics(self.exported, data.train.images, device=self.device)
        checkpoint.export_encoder(self.exported, weights_path,
                                  fitted_on=f"all {len(data.train)} training images of the run",
                                  metadata={"loss": cfg.loss, "fingerprint": self.fingerprint, "step": str(state.step),
                                            "weights": "ema" if self.ema else "last",
                                            **training_data_metadata(data),
                                            **{k: str(v) for k, v in self.world.record().items()}})
        write_metrics(metrics_path, cfg, state, self.fingerprint, self.device, data, self.world)
        print(f"Exported {weights_path} and {metrics_path} after {state.step} steps ({state.epoch} epochs, "
              f"{state.elapsed_s / 60:.1f} min of training), run fingerprint {self.fingerprint}.")
        barrier(self.world)
        return TrainResult(self.exported, state.history, self.run_dir, weights_path, metrics_path, cfg)


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
    try:
        train(cfg)
    finally:
        if torch.distributed.is_initialized():      # under torchrun: leave the process group cleanly
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    # torchrun prints a failed rank's traceback in its summary when the entry point is wrapped in `record`
    from torch.distributed.elastic.multiprocessing.errors import record
    sys.exit(record(main)())
