"""The training engine: a run (`start_run` -> TrainingRun) and the loop over it. The notebook's Section 5 writes
the loop out with its own functions (Sections 3 and 4); `train()` runs the very same statements with the
engine's (utils/steps.py), for `python -m utils.train` and the benchmarks (tests/test_notebook.py checks that the
two loops are the same):

    with start_run(cfg, data, model, optimizer) as run:      # new, or resumed from its newest checkpoint
        while not run.finished:
            for batch in run.epoch_batches():
                optim.set_lr(optimizer, learning_rate(run.progress))
                loss, z0 = training_step(run.model, batch, optimizer, run.generator)
                run.record_step(loss, z0)
            if run.due(cfg.eval_every):
                run.evaluate(evaluation_step)
            if run.due(cfg.checkpoint_every):
                run.save()
        result = run.finish(evaluation_step)

What the run does around the algorithm: resuming from the newest checkpoint of the same run; the epoch's shuffle;
atomic checkpoints (every checkpoint_every epochs, every checkpoint_every_min minutes, and when interrupted); the
time budget; the progress bar, the loss log and its collapse statistics; the speed and budget plan; the EMA and
DINO's teacher; the export. Under torchrun, DDP over the ranks (utils/distributed.py), rank 0 writing every file.
Settings and recipes: utils/config.py; what a checkpoint holds: utils/run_state.py; GPU memory: utils/memory.py.

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
from utils import budget, checkpoint, dino, monitor, optim, probes
from utils.config import TrainConfig, parse_overrides, run_dir_of
from utils.data import (TrainData, epoch_order, load_splits, prepare_data, resolve_data_dir, spread_rows,
                        training_data_record)
from utils.device import configure_backends, pick_device
from utils.distributed import (barrier, broadcast_float, init_world, is_main_process, same_on_every_rank,
                               wrap_for_ranks)
from utils.ema import ModelEMA, ema_momentum
from utils.features import fit_feature_statistics
from utils.memory import batch_that_fits_now, out_of_memory_error, out_of_memory_error_on_ranks
from utils.progress import progress_bar, progress_write
from utils.run_state import RunState, TrainError, resume_from, snapshot
from utils.steps import (autocast_context, build_networks, code_signature, make_objective, self_distillation_step,
                         training_step, validation_loss, view_configs)


def seed_all(seed: int) -> None:
    """The course's seed_all: Python, NumPy and PyTorch (CPU and every GPU) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


@dataclass
class TrainResult:
    model: ImageEncoder               # the exported network (the EMA's, when the recipe averages)
    history: dict
    run_dir: Path
    weights_path: Path
    metrics_path: Path
    config: TrainConfig


def train(cfg: TrainConfig, data: TrainData | None = None) -> TrainResult:
    """Train cfg's recipe on data (loaded from cfg.data_dir when not given) with the engine's own step,
    evaluation and schedule, in the loop the notebook's Section 5 writes out: resumed when a checkpoint of the
    same run exists; evaluated and checkpointed every few epochs; final_model.safetensors exported at the end.
    loss="dino" trains a head and a teacher too; with ema_momentum > 0 the exported weights (and the probes) are
    those of the EMA of the encoder."""
    device = pick_device(cfg.device)
    configure_backends(device)
    seed_all(cfg.seed)
    if data is None:
        data_dir = resolve_data_dir(cfg.data_dir or None, verbose=is_main_process())
        data = prepare_data(load_splits(data_dir), device, cfg.max_train_images)
    model, head, optimizer = build_networks(cfg, device)
    with start_run(cfg, data, model, optimizer, head=head) as run:
        training_step, evaluation_step, learning_rate = engine_functions(cfg, data, run)
        while not run.finished:
            for batch in run.epoch_batches():
                optim.set_lr(optimizer, learning_rate(run.progress))
                loss, z0 = training_step(run.model, batch, optimizer, run.generator)
                run.record_step(loss, z0)
            if run.due(cfg.eval_every):
                run.evaluate(evaluation_step)
            if run.due(cfg.checkpoint_every):
                run.save()
        result = run.finish(evaluation_step)
    return result


def engine_functions(cfg: TrainConfig, data: TrainData, run: "TrainingRun"):
    """(training_step, evaluation_step, learning_rate) of cfg's recipe, the engine's versions of what the
    notebook's Sections 3 and 4 write out: the step of utils/steps.py with the recipe's views and loss (DINO's
    step and the run's distiller for loss="dino"); the validation loss of the trained network, then the exported
    network's feature statistics and fast probes; the warm-up and cosine schedule of utils/optim.py."""
    views = view_configs(cfg)
    objective = run.distiller or make_objective(cfg)
    step = functools.partial(self_distillation_step if run.distiller else training_step, view_cfgs=views,
                             objective=objective, autocast=run.autocast)
    probe_rows = spread_rows(len(data.train), cfg.eval_max_train)

    def evaluation_step(model):
        val_loss = validation_loss(run.encoder, data.val.images, views, objective, batch_size=cfg.batch_size,
                                   seed=cfg.seed + 2, autocast=run.autocast)
        fit_feature_statistics(model, data.train.images[probe_rows], device=run.device)
        result, _ = probes.evaluate_encoder(model, data.train, data.val, data.ood, fit_rows=probe_rows,
                                            max_iter=cfg.eval_linear_iters)
        return {"val_loss": val_loss, **result.accuracies()}

    return step, evaluation_step, lambda progress: cfg.lr * optim.lr_factor(progress, cfg.warmup,
                                                                            cfg.final_lr_ratio)


def start_run(cfg: TrainConfig, data: TrainData, model: ImageEncoder, optimizer: torch.optim.Optimizer, *,
              head: torch.nn.Module | None = None, code: tuple = ()) -> "TrainingRun":
    """The run of cfg's recipe on `data` with this model and optimizer (built by the caller: the notebook's
    Sections 2 and 4, or train()), resumed from its newest checkpoint when one exists: the model, the optimizer
    and every counter continue where they stopped. Prints which. Use it in a `with` block: an interrupt (Ctrl+C,
    the notebook's stop button) inside saves a checkpoint first, and running out of GPU memory names a batch size
    that fits.

    head: DINO's head (loss="dino", built with the model by steps.build_networks). code: what the caller wrote and
    the recipe does not say (its functions, its optimizer): steps.code_signature puts it into the run's
    fingerprint, so that editing it starts a new run folder instead of resuming one made with the old code."""
    if cfg.loss == "dino" and head is None:
        raise ValueError("loss='dino' trains a prototype head and a teacher, which train() builds and runs: use "
                         "train(cfg, data) (or `python -m utils.train loss=dino ...`), or choose another loss.")
    if cfg.batch_size > len(data.train):
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the training set ({len(data.train)} images); "
                         f"use batch_size <= {len(data.train)}.")
    return TrainingRun(cfg, data, model, optimizer, head=head, code=code)


class TrainingRun:
    """One run (start_run): `epoch_batches`, `record_step`, `evaluate`, `save` and `finish` (the export), driven by
    the loop of the module's docstring. `finished` is True once the epochs or the time budget are spent;
    `due(every)` says whether this epoch is one to evaluate or save at; `progress` (0 to 1) drives the schedule.

    The networks: `encoder` is the ImageEncoder that trains (the caller's model); `model` is what the step calls
    (the encoder itself, compiled with cfg.compile, or under torchrun this rank's share of it); `exported` is what
    the probes and the export see (the EMA of the encoder when the recipe averages, else the encoder)."""

    def __init__(self, cfg: TrainConfig, data: TrainData, model: ImageEncoder, optimizer, *, head=None,
                 code: tuple = ()):
        self.cfg, self.data, self.optimizer, self.head = cfg, data, optimizer, head
        self.device = device = data.train_on_device.device
        # One process, or this rank of a torchrun launch (utils/distributed.py): rank 0 prints, writes and probes.
        self.world = init_world(device, cfg.dist_timeout_min)
        self.steps_per_epoch = len(data.train) // cfg.batch_size
        if device.type == "cuda" and cfg.channels_last:
            model.to(memory_format=torch.channels_last)      # in place: the optimizer keeps the same parameters
        self.encoder = model
        # The EMA of what trains (the encoder, and DINO's head): exported instead of the last weights, and DINO's
        # teacher. The teacher runs forward passes of its own, so its batch-norm statistics are its own;
        # otherwise they are averaged.
        self.trained = torch.nn.ModuleDict({"encoder": model, **({"head": head} if head is not None else {})})
        self.ema = (ModelEMA(self.trained, buffers="own" if cfg.loss == "dino" else "average")
                    if cfg.ema_momentum > 0 else None)
        self.exported = self.ema.model["encoder"] if self.ema else model
        # Under torchrun every rank runs the network on its share of the batch, the outputs of the whole global
        # batch gathered back, so that every loss sees the global batch.
        self.model = wrap_for_ranks(torch.compile(model) if cfg.compile else model, self.world, device,
                                    cfg.batch_size, cfg.sync_bn)
        self.distiller = None
        if cfg.loss == "dino":
            self.distiller = dino.SelfDistillation(head, self.ema.model, num_global=cfg.global_views,
                                                   teacher_temperature=cfg.dino_teacher_temperature,
                                                   student_temperature=cfg.dino_student_temperature,
                                                   center_momentum=cfg.dino_center_momentum)
        self.autocast = autocast_context(device, cfg.precision)
        self.order_generator = torch.Generator(device=device).manual_seed(cfg.seed)   # each epoch's shuffle
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)     # the step's augmentations

        signature = code_signature(*code) + self.world.result_tag(cfg.sync_bn)
        self.fingerprint = cfg.fingerprint(data.signature(), signature)
        self.run_dir = run_dir_of(cfg, data.signature(), signature)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.state = RunState()
        if cfg.resume and (latest := checkpoint.latest_checkpoint(self.ckpt_dir)):
            self.state = resume_from(latest, self.fingerprint, self.pieces(), self.generators(), device)
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
        self.planned = False              # the speed and budget plan is printed once, early in the run
        self.stepping = False             # between a batch handed out and its record_step
        self.window_start = self.step_start = time.time()

    def pieces(self) -> dict:
        """What a checkpoint holds besides the run's state (utils/run_state.py's PIECES)."""
        return {"model": self.encoder, "optimizer": self.optimizer, "head": self.head, "ema": self.ema,
                "dino": self.distiller}

    def generators(self) -> dict:
        return {"order": self.order_generator, "aug": self.generator}

    def say(self, text: str) -> None:
        """Print, on rank 0 only."""
        if self.world.is_main:
            print(text)

    @property
    def progress(self) -> float:
        """How much of the run is done, 0 to 1: training time over the budget, or steps over all epochs' steps."""
        return self.state.elapsed_s / self.budget_s if self.budget_s else self.state.step / self.total_steps

    @property
    def finished(self) -> bool:
        return self.progress >= 1.0

    @property
    def epoch(self) -> int:
        """Complete epochs done."""
        return self.state.epoch

    def due(self, every: int) -> bool:
        """True right after every `every`-th epoch, unless the run is finished (finish() evaluates and saves)."""
        return bool(every) and self.state.epoch % every == 0 and not self.finished

    def __enter__(self) -> "TrainingRun":
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        """Inside the `with` block: an interrupt saves a checkpoint first (then goes on); a step that runs out of
        GPU memory becomes a TrainError that names a batch size that fits now."""
        self.bar.close()
        if kind is KeyboardInterrupt:
            path = self.save()
            self.say(f"\nInterrupted at step {self.state.step}: checkpoint saved to {path}. Run the same settings "
                     f"again to resume from it.")
        elif kind is not None and issubclass(kind, torch.cuda.OutOfMemoryError) and self.stepping:
            if self.world.distributed:
                raise out_of_memory_error_on_ranks(self.cfg, self.world.rank, self.world.size) from error
            # trial passes of batch_size/2, /4, ... on this batch: the batch that fits now, for the advice
            fits = batch_that_fits_now(self.cfg, self.model, self.batch, self.optimizer,
                                       self.distiller or make_objective(self.cfg), self.generator, self.autocast)
            raise out_of_memory_error(self.cfg, fits) from error
        return False

    def epoch_batches(self):
        """This epoch's batches, uint8 (batch_size, 64, 64, 3) on the device: consecutive slices of a shuffle
        drawn once per epoch (the incomplete last slice dropped), from where a resumed run stopped, until the
        epoch ends or the time budget is spent. Writes a checkpoint every checkpoint_every_min minutes. Each batch
        must be followed by record_step."""
        cfg, state = self.cfg, self.state
        epoch = state.epoch
        self.window_start = time.time()             # throughput excludes evaluation and saving
        self.model.train()
        while not self.finished and state.epoch == epoch:
            if time.time() - self.last_ckpt_time > cfg.checkpoint_every_min * 60:
                self.save()                            # holds the unlogged losses: the history does not change
            if state.order is None:
                state.order = epoch_order(len(self.data.train), self.order_generator)
            start = state.batch_in_epoch * cfg.batch_size
            self.batch = self.data.train_on_device[state.order[start:start + cfg.batch_size]]
            self.stepping, self.step_start = True, time.time()
            yield self.batch
            if self.stepping:
                raise TrainError("run.record_step(loss, z0) must follow every training step: the run counts the "
                                 "step, logs its loss and closes the epoch there.")

    def record_step(self, loss: torch.Tensor, z0: torch.Tensor) -> None:
        """After each training step (loss: 0-d tensor; z0: view 0's projections (B, D)): update the EMA, count
        the step, log the loss every log_every steps with the throughput and z0's collapse statistics, advance
        the progress bar and the training clock, and close the epoch after its last batch."""
        cfg, state = self.cfg, self.state
        self.stepping = False
        if self.ema:
            self.ema.update(self.trained, momentum=ema_momentum(self.progress, start=cfg.ema_momentum,
                                                                end=cfg.ema_momentum_end))
        state.add_step(loss)
        end_of_epoch = state.batch_in_epoch == self.steps_per_epoch
        if state.step % cfg.log_every == 0 or end_of_epoch:
            self._log(z0)
        state.elapsed_s += time.time() - self.step_start      # after a log's sync: on a GPU the work is done
        if self.budget_s:       # rank 0's clock decides the schedule and the end for every rank (under
            # torchrun a host sync per step: its cost on GPUs is not measured)
            state.elapsed_s = broadcast_float(state.elapsed_s, self.world, self.device)
        self.bar.update(1)
        if self.budget_s and state.step % 10 == 0:
            self.bar.total = max(state.step + 1, int(state.step / max(self.progress, 1e-9)))
        if not self.planned and state.elapsed_s >= budget.plan_after_s(self.budget_s):
            self._print_plan()
        if end_of_epoch:
            state.end_epoch(self.steps_per_epoch, self.optimizer.param_groups[0]["lr"])

    def _log(self, z0: torch.Tensor) -> None:
        """One history["log"] record of the steps since the last one (the one host sync), the progress bar's
        figures, and the collapse alarm (once per run)."""
        state = self.state
        window_sum, steps = state.take_window()
        if not math.isfinite(window_sum):
            raise TrainError(f"loss became {window_sum / steps} at step {state.step}; lower lr or check the data "
                             f"(earlier checkpoints are kept).")
        stats = {k: round(float(v), 4) for k, v in monitor.embedding_stats(z0).items()}
        images_per_s = steps * self.cfg.batch_size / max(time.time() - self.window_start, 1e-9)
        record = {"step": state.step, "loss": round(window_sum / steps, 5), "lr": self.optimizer.param_groups[0]["lr"],
                  "img_per_s": round(images_per_s, 1), **stats}
        state.history["log"].append(record)
        self.window_start = time.time()
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}",
                             rank=f"{record['eff_rank']:.0f}", epoch=state.epoch, refresh=False)
        warning = monitor.collapse_warning(record)
        if warning and not self.warned_collapse and self.world.is_main:
            progress_write(f"step {state.step}: {warning}")
            self.warned_collapse = True

    def _print_plan(self) -> None:
        """Once: the measured speed, what the budget (or the epochs) will buy, and the reference curve of the
        shipped recipe (utils/budget.py)."""
        self.planned = True
        if self.world.is_main:
            images = self.state.step * self.cfg.batch_size
            for line in budget.plan_lines(images / max(self.state.elapsed_s, 1e-9), len(self.data.train),
                                          self.cfg, done_s=self.state.elapsed_s):
                progress_write(line)

    def save(self) -> Path:
        """An atomic checkpoint of everything needed to continue exactly (utils/run_state.py); rank 0 writes it
        (every rank holds the same state)."""
        if not self.world.is_main:
            return checkpoint.checkpoint_path(self.ckpt_dir, self.state.step)
        path = checkpoint.save_checkpoint(snapshot(self.state, self.pieces(), self.generators(), self.cfg,
                                                   self.fingerprint),
                                          self.ckpt_dir, self.state.step, keep=self.cfg.keep_checkpoints)
        self.last_ckpt_time = time.time()
        return path

    def evaluate(self, evaluation_step) -> dict:
        """evaluation_step(exported network) -> {name: value} (the validation loss, the probes), recorded in
        history["eval"] with the epoch, step and training time, and printed as one line. Rank 0 evaluates; the
        other ranks wait for it (and keep no record: rank 0's history is the one written)."""
        state = self.state
        self.last_eval_step = state.step
        if not self.world.is_main:
            barrier(self.world)
            return {}
        record = {"epoch": state.epoch, "step": state.step, "elapsed_s": round(state.elapsed_s, 2),
                  **evaluation_step(self.exported)}
        state.history["eval"].append(record)
        progress_write(format_eval(record))
        barrier(self.world)
        return record

    def finish(self, evaluation_step) -> TrainResult:
        """The end of the run, in this one place: the last evaluation and checkpoint (a resumed run that had
        already finished has both), then get_features' statistics from every training image, then the export
        and training_metrics.json (by rank 0; the other ranks wait for it)."""
        cfg, state, data = self.cfg, self.state, self.data
        self.bar.close()
        if self.last_eval_step != state.step:       # the same on every rank (only rank 0 keeps the records)
            self.evaluate(evaluation_step)
            self.save()
        weights_path = Path(cfg.export_path) if cfg.export_path else self.run_dir / "final_model.safetensors"
        metrics_path = self.run_dir / "training_metrics.json"
        result = TrainResult(self.exported, state.history, self.run_dir, weights_path, metrics_path, cfg)
        if not self.world.is_main:
            barrier(self.world)
            return result
        fit_feature_statistics(self.exported, data.train.images, device=self.device)
        checkpoint.export_encoder(self.exported, weights_path,
                                  fitted_on=f"all {len(data.train)} training images of the run",
                                  metadata={"loss": cfg.loss, "fingerprint": self.fingerprint, "step": str(state.step),
                                            "weights": "ema" if self.ema else "last",
                                            **training_data_record(data.train, data.val),
                                            **{k: str(v) for k, v in self.world.record().items()}})
        write_metrics(metrics_path, cfg, state, self.fingerprint, self.device, data, self.world)
        print(f"Exported {weights_path} and {metrics_path} after {state.step} steps ({state.epoch} epochs, "
              f"{state.elapsed_s / 60:.1f} min of training), run id {self.fingerprint}.")
        barrier(self.world)
        return result


def format_eval(record: dict) -> str:
    """"epoch    4 | val loss 4.1234 | ID k-NN 23.40% | ID linear ...": one line per evaluation (the probes by their
    labels, anything else an evaluation_step returns by its own name)."""
    parts = [f"epoch {record['epoch']:>4}"]
    for key, value in record.items():
        if key in ("epoch", "step", "elapsed_s"):
            continue
        if key == "val_loss":
            parts.append(f"val loss {value:.4f}")
        elif key in probes.PROBE_LABELS:
            parts.append(f"{probes.PROBE_LABELS[key]} {value:.2f}%")
        else:
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return " | ".join(parts)


def write_metrics(path: Path, cfg: TrainConfig, state: RunState, fingerprint: str, device, data, world) -> Path:
    """training_metrics.json: settings, where it ran (device, world size and backend), what it trained on, and
    the full history (train, eval, log)."""
    record = {
        "config": dataclasses.asdict(cfg), "fingerprint": fingerprint,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, **world.record(), "steps": state.step, "epochs": state.epoch,
        "train_minutes": round(state.elapsed_s / 60, 3),
        "data": {"train": str(data.train.path), "n_train": len(data.train), "n_val": len(data.val),
                 "n_ood": len(data.ood), **training_data_record(data.train, data.val)},
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
