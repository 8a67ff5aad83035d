"""The training engine: `train(cfg)` is the whole loop, top to bottom, in one function.

Where its pieces live: the settings and the run's folder in utils/config.py; one step (views -> projections ->
loss -> update) in utils/steps.py; what a checkpoint holds in utils/run_state.py; GPU memory (fitting the batch,
out-of-memory advice) in utils/memory.py; the data on the device in utils/data.py; then augment, losses, probes,
checkpoint, optim, monitor, ema and dino, one concern each.

Command line (same code as the notebook, for long runs outside a browser):

    python -m utils.train loss=ntxent epochs=100 batch_size=512
    python -m utils.train time_budget_min=20 arch=resnet18_s2 data_dir=/path/to/data

A run lives in `<out_dir>/<run_name>/` (run_name defaults to the objective plus a fingerprint of every
setting that changes the result). Running the same settings again resumes from the newest checkpoint there.
"""
from __future__ import annotations

import dataclasses
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
from utils.data import TrainData, epoch_order, load_splits, prepare_data, resolve_data_dir, spread_rows
from utils.device import configure_backends, largest_fitting_batch, pick_device
from utils.ema import ModelEMA, ema_momentum
from utils.features import fit_feature_statistics
from utils.memory import batch_that_fits_now, fit_batch_to_gpu, out_of_memory_error
from utils.progress import progress_bar, progress_write
from utils.run_setup import build_run
from utils.run_state import RunState, TrainError, resume_from, snapshot
from utils.steps import (autocast_context, code_signature, make_objective, project_views, self_distillation_step,
                         training_step, validation_loss)

# The engine's names, importable from here as before the split (the notebook and the benchmarks use them).
__all__ = ["LOSS_NAMES", "TrainConfig", "TrainData", "TrainError", "TrainResult", "autocast_context",
           "code_signature", "fit_batch_to_gpu", "largest_fitting_batch", "make_objective", "parse_overrides",
           "prepare_data", "probe_metrics", "project_views", "run_dir_of", "seed_all", "train",
           "training_step"]


def seed_all(seed: int) -> None:
    """The course's seed_all: Python, NumPy and PyTorch (CPU and every GPU) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def probe_metrics(model, data: TrainData, cfg: TrainConfig, device) -> dict[str, float]:
    """Fast probes (percent) under the grader's protocol on the current model (probes.evaluate_protocol): ID fit
    on train (at most eval_max_train images, spread_rows), scored on val; OOD fit/scored on the course's 80/20
    split. The model's feature statistics must be fitted first (train() does it, as a line of its own); this only
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

    parts = build_run(cfg, device)      # the model, the student (+ DINO's head), the optimizer, the views
    model, student, optimizer, view_cfgs = parts.model, parts.student, parts.optimizer, parts.view_cfgs
    # The EMA of the student: exported instead of the last weights, and DINO's teacher. The teacher runs forward
    # passes of its own, so its batch-norm statistics are its own; otherwise they are averaged (utils/ema.py).
    ema = ModelEMA(student, buffers="own" if cfg.loss == "dino" else "average") if cfg.ema_momentum > 0 else None
    exported = ema.model["encoder"] if ema else model       # what the probes measure and the export writes
    run_model = torch.compile(model) if cfg.compile else model
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
        # get_features' statistics for the current weights, on the probes' training rows, then the probes
        fit_feature_statistics(exported, data.train.images[spread_rows(n_train, cfg.eval_max_train)], device=device)
        record.update(probe_metrics(exported, data, cfg, device))
        state.history["eval"].append(record)
        progress_write(format_eval(record))

    bar = progress_bar(total=total_steps if not budget_s else None, initial=state.step, unit="step",
                       disable=not cfg.progress, dynamic_ncols=True, desc=cfg.loss)
    last_ckpt_time = window_start = time.time()
    warned_collapse = False
    model.train()
    try:
        while progress() < 1.0:
            if state.order is None:
                state.order = epoch_order(n_train, order_gen)
            start = state.batch_in_epoch * cfg.batch_size
            batch = data.train_on_device[state.order[start:start + cfg.batch_size]]
            optim.set_lr(optimizer, cfg.lr * optim.lr_factor(progress(), cfg.warmup, cfg.final_lr_ratio))

            t0 = time.time()
            try:
                loss, z0 = step(run_model, batch, view_cfgs, objective, optimizer, aug_gen, autocast)
            except torch.cuda.OutOfMemoryError as error:
                # trial steps of batch_size/2, /4, ... on this batch: the batch that fits now, for the advice
                fits = batch_that_fits_now(cfg, run_model, batch, view_cfgs, objective, optimizer, aug_gen, autocast)
                raise out_of_memory_error(cfg, fits) from error
            if ema:
                ema.update(student, momentum=ema_momentum(progress(), start=cfg.ema_momentum, end=cfg.ema_momentum_end))
            state.step += 1
            state.batch_in_epoch += 1
            state.window_loss = state.window_loss + loss      # summed on the device: no host sync per step
            state.window_steps += 1
            end_of_epoch = state.batch_in_epoch == steps_per_epoch

            if state.step % cfg.log_every == 0 or end_of_epoch:
                window_sum, steps = float(state.window_loss), state.window_steps     # the one host sync
                if not math.isfinite(window_sum):
                    raise TrainError(f"loss became {window_sum / steps} at step {state.step}; lower lr or check "
                                     f"the data (earlier checkpoints are kept).")
                state.epoch_loss_sum += window_sum
                state.window_loss, state.window_steps = 0.0, 0
                record = log_record(state.step, window_sum / steps, optimizer, z0,
                                    images_per_s=steps * cfg.batch_size / max(time.time() - window_start, 1e-9))
                state.history["log"].append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}",
                                rank=f"{record['eff_rank']:.0f}", epoch=state.epoch, refresh=False)
                warning = monitor.collapse_warning(record)
                if warning and not warned_collapse:           # once per run: the statistics stay in the log
                    progress_write(f"step {state.step}: {warning}")
                    warned_collapse = True
                window_start = time.time()
            state.elapsed_s += time.time() - t0             # after the sync: on a GPU the step's work is done
            bar.update(1)
            if budget_s and state.step % 10 == 0:
                bar.total = max(state.step + 1, int(state.step / max(progress(), 1e-9)))

            if end_of_epoch:
                state.history["train"].append({"epoch": state.epoch + 1, "step": state.step,
                                               "loss": state.epoch_loss_sum / steps_per_epoch,
                                               "lr": optimizer.param_groups[0]["lr"],
                                               "elapsed_s": round(state.elapsed_s, 2)})
                state.epoch, state.batch_in_epoch, state.order, state.epoch_loss_sum = state.epoch + 1, 0, None, 0.0
                finished = progress() >= 1.0        # the last evaluation and save come after the loop
                if not finished and cfg.eval_every and state.epoch % cfg.eval_every == 0:
                    evaluate_now()
                if not finished and cfg.checkpoint_every and state.epoch % cfg.checkpoint_every == 0:
                    save()
                    last_ckpt_time = time.time()
                window_start = time.time()              # throughput excludes evaluation and saving
            if time.time() - last_ckpt_time > cfg.checkpoint_every_min * 60:
                save()                                  # holds the unlogged losses: the history does not change
                last_ckpt_time = time.time()
    except KeyboardInterrupt:
        bar.close()
        path = save()
        print(f"\nInterrupted at step {state.step}: checkpoint saved to {path}. Run the same settings again "
              f"to resume from it.")
        raise
    bar.close()
    # The end of the run, in this one place: the last evaluation and checkpoint (a resumed run that had already
    # finished has both), then get_features' statistics from every training image, then the export.
    if not state.history["eval"] or state.history["eval"][-1]["step"] != state.step:
        evaluate_now()
        save()
    weights_path = Path(cfg.export_path) if cfg.export_path else run_dir / "final_model.safetensors"
    fit_feature_statistics(exported, data.train.images, device=device)
    checkpoint.export_encoder(exported, weights_path, fitted_on=f"all {len(data.train)} training images of the run",
                              metadata={"loss": cfg.loss, "fingerprint": fingerprint, "step": str(state.step),
                                        "weights": "ema" if ema else "last"})
    metrics_path = write_metrics(run_dir / "training_metrics.json", cfg, state, fingerprint, device, data)
    print(f"Exported {weights_path} and {metrics_path} after {state.step} steps "
          f"({state.epoch} epochs, {state.elapsed_s / 60:.1f} min of training).")
    return TrainResult(exported, state.history, run_dir, weights_path, metrics_path, cfg)


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
