"""Training throughput, side by side in one run, and the grader-protocol evaluation at course size.

Variants (same model, same batch size, same data: random uint8 64x64 images, content does not change speed):
  course_pipeline  Dataset + DataLoader(num_workers, pin_memory) with per-sample torchvision transforms on the
                   CPU making two views, float32 training: what the course's notebook does.
  engine           utils.steps.training_step as shipped: uint8 images on the device, per-sample views made
                   there (utils.augment), bf16 autocast and channels_last on CUDA.
  engine_compiled  the same with torch.compile (CUDA only).
  ceiling          the same model's forward, backward and update on two views already on the device.
Per variant: views/s, seconds per epoch of `--images` images (two views each), peak GPU memory, and for the
device-side variants the model FLOP/s and MFU (FLOPs counted by torch.utils.flop_counter for one step).

Evaluation: the grader's probes on features of course size (100,000 train, 10,000 val, 10,000 OOD, 1000-d,
class-structured Gaussian features, 200 classes each side), scikit-learn exact versus utils.probes fast, with
their accuracy difference.

    python benchmarks/speed.py                      # on a GPU: the full benchmark
    python benchmarks/speed.py --skip-exact-eval    # skip the many-minute scikit-learn protocol
    python benchmarks/speed.py --tiny               # CPU smoke configuration (seconds), used by the tests

Writes speed-<device>-<date>.json under --out (rewritten after each variant) and prints a table.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T

import common
from models import ARCH, ImageEncoder
from utils import augment, losses, probes
from utils.optim import build_optimizer
from utils.provenance import provenance
from utils.steps import autocast_context, project_views, training_step

VARIANTS = ("course_pipeline", "engine", "engine_compiled", "ceiling")
PRECISION = "auto"                         # bf16 on CUDA, fp32 on the CPU, as the engine ships
TINY = dict(arch="tiny", batch_size=16, images=256, steps=2, course_steps=2, warmup=1, repeats=2, workers=0)
FULL = dict(arch=ARCH, batch_size=512, images=100_000, steps=200, course_steps=30, warmup=30, repeats=3, workers=4)
EVAL_SIZES = {True: dict(classes=10, train_per_class=100, val_per_class=10, ood_per_class=20, dim=1000),     # tiny
              False: dict(classes=200, train_per_class=500, val_per_class=50, ood_per_class=50, dim=1000)}


class TwoViewDataset(Dataset):
    """uint8 (N, 64, 64, 3) images -> (view 1, view 2), each (3, 64, 64) float in [0, 1], by the per-sample CPU
    recipe students use: PIL crop, flip, jitter, grayscale, blur, then ToTensor."""

    def __init__(self, images: np.ndarray):
        self.images = images
        self.transform = T.Compose([
            T.RandomResizedCrop(64, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(7, sigma=(0.1, 2.0))], p=0.5), T.ToTensor()])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i])
        return self.transform(image), self.transform(image)


def two_view_step(model, optimizer, views, autocast=contextlib.nullcontext()) -> None:
    """Forward, NT-Xent (temperature 0.1) and update on two batches of views already made."""
    with autocast:
        loss = losses.nt_xent(project_views(model, views).float(), temperature=0.1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def course_pipeline_runner(images, model, optimizer, batch_size, workers, device):
    """Returns run(steps): `steps` float32 training steps fed by the DataLoader (loading included)."""
    loader = DataLoader(TwoViewDataset(images), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    batches = (batch for _ in itertools.count() for batch in loader)         # epoch after epoch

    def run(steps):
        for _ in range(steps):
            two_view_step(model, optimizer, [v.to(device, non_blocking=True) for v in next(batches)])
    return run


def engine_runner(images_on_device, model, optimizer, batch_size, device, precision=PRECISION):
    """Returns run(steps): the shipped training_step on random batches of device-resident uint8 images."""
    generator = torch.Generator(device=device).manual_seed(0)
    step = functools.partial(training_step, view_cfgs=augment.default_views(2),
                             objective=lambda z, g: losses.nt_xent(z, temperature=0.1),
                             autocast=autocast_context(device, precision))

    def run(steps):
        for _ in range(steps):
            index = torch.randint(0, len(images_on_device), (batch_size,), device=device, generator=generator)
            step(model, images_on_device[index], optimizer, generator)
    return run


def ceiling_runner(model, optimizer, batch_size, device, precision=PRECISION):
    """Returns run(steps): forward, backward and update on two fixed random views already on the device."""
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    views = [torch.rand(batch_size, 3, 64, 64, device=device).to(memory_format=memory_format) for _ in range(2)]
    autocast = autocast_context(device, precision)

    def run(steps):
        for _ in range(steps):
            two_view_step(model, optimizer, views, autocast)
    return run


def fresh_model(arch: str, device: torch.device, channels_last: bool):
    model = ImageEncoder(arch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, build_optimizer("adamw", model, 1e-3, 1e-4, device)


def model_flops_per_step(arch: str, batch_size: int, device: torch.device) -> float:
    """FLOPs of one forward + backward of the model on 2 x batch_size 64-px images (torch's flop counter:
    convolutions and matmuls, 2 FLOPs per multiply-add). Counted on a fresh model so no state changes."""
    model = ImageEncoder(arch).to(device)
    x = torch.rand(2 * batch_size, 3, 64, 64, device=device)
    counter = FlopCounterMode(display=False)
    with counter, autocast_context(device, PRECISION):
        _, z = model(x)
        z.float().sum().backward()
    return float(counter.get_total_flops())


def measure_variant(name, args, device, images, images_on_device, flops, peak, arch=None, label=None) -> dict:
    """One row of the table, called `label` (default `name`): a fresh model (`arch`, default args.arch) and
    optimizer fed the way variant `name` says; after args.warmup steps, args.repeats timed repeats of args.steps
    steps (course_pipeline: args.course_steps); the figures use the median repeat."""
    model, optimizer = fresh_model(arch or args.arch, device, device.type == "cuda" and name != "course_pipeline")
    common.reset_peak_memory(device)
    steps = args.course_steps if name == "course_pipeline" else args.steps
    if name == "course_pipeline":
        run, flops = course_pipeline_runner(images, model, optimizer, args.batch_size, args.workers, device), None
    elif name == "ceiling":
        run = ceiling_runner(model, optimizer, args.batch_size, device)
    else:
        run = engine_runner(images_on_device, torch.compile(model) if name == "engine_compiled" else model,
                            optimizer, args.batch_size, device)
    warmup_start = time.perf_counter()
    run(args.warmup)
    common.synchronize(device)
    warmup_s = time.perf_counter() - warmup_start
    times = common.time_repeats(lambda: run(steps), args.repeats, device)
    step_s = common.median(times) / steps
    views_per_s = 2 * args.batch_size / step_s
    return {"variant": label or name, "views_per_s": views_per_s, "images_per_s": views_per_s / 2,
            "epoch_s": 2 * args.images / views_per_s, "step_ms": 1000 * step_s, "steps_per_repeat": steps,
            "repeat_s": times, "warmup_s": warmup_s, "peak_memory_gib": common.peak_memory_gib(device),
            "model_gflops_per_step": flops / 1e9 if flops else None,
            "model_tflops_per_s": None if flops is None else flops / step_s / 1e12,
            "mfu": None if flops is None else common.mfu(flops, 1 / step_s, peak)}


def clustered_features(classes: int, dim: int, n_per_class: int, centres_seed: int, seed: int, spread: float = 5.0):
    """Class-structured features like an encoder's: class centre (random, from centres_seed) plus Gaussian noise,
    L2-normalised and scaled by sqrt(dim) as get_features does. Returns (features float32 (N, dim), labels (N,))."""
    centres = np.random.default_rng(centres_seed).standard_normal((classes, dim)).astype(np.float32)
    labels = np.repeat(np.arange(classes), n_per_class)
    noise = np.random.default_rng(seed).standard_normal((len(labels), dim)).astype(np.float32)
    features = centres[labels] + spread * noise
    features /= np.linalg.norm(features, axis=1, keepdims=True) / np.sqrt(dim)
    return features, labels


def time_evaluation(sizes: dict, exact: bool, device: torch.device) -> dict:
    """The four probes of the grader's protocol, fast (torch) and optionally exact (scikit-learn).
    train and val share class centres (ID); OOD has its own classes."""
    classes, dim = sizes["classes"], sizes["dim"]
    train = clustered_features(classes, dim, sizes["train_per_class"], centres_seed=1, seed=3)
    val = clustered_features(classes, dim, sizes["val_per_class"], centres_seed=1, seed=4)
    ood = clustered_features(classes, dim, sizes["ood_per_class"], centres_seed=2, seed=5)
    result = {"features": {**sizes, "kind": "class-centre + Gaussian noise (spread 5), L2-normalised x sqrt(dim)"},
              "fast": None, "exact": None}
    for mode in (["fast", "exact"] if exact else ["fast"]):
        start = time.perf_counter()
        accuracies = probes.evaluate_protocol(train, val, ood, fast=mode == "fast", progress=False, device=device)
        common.synchronize(device)
        result[mode] = {"seconds": time.perf_counter() - start,
                        "accuracies_percent": {k: float(v) for k, v in accuracies.accuracies().items()}}
    if exact:
        fast, slow = result["fast"]["accuracies_percent"], result["exact"]["accuracies_percent"]
        result["max_abs_difference_points"] = max(abs(fast[k] - slow[k]) for k in fast)
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke configuration (tiny arch, few steps)")
    parser.add_argument("--arch", default=None, help=f"model architecture (default: {ARCH!r}, the submitted one)")
    for flag, what in (("batch-size", "batch size"), ("images", "data set size"), ("steps", "timed steps per repeat"),
                       ("warmup", "untimed steps first"), ("repeats", "repeats, median reported"),
                       ("workers", "DataLoader workers"), ("course-steps", "timed steps per course_pipeline repeat")):
        key = flag.replace("-", "_")
        parser.add_argument(f"--{flag}", type=int, default=None, help=f"{what} (default {FULL[key]}, tiny {TINY[key]})")
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS),
                        help="training variants to time (none: only the evaluation)")
    parser.add_argument("--ceiling-archs", nargs="*", default=[],
                        help="other architectures whose ceiling (model speed alone) is timed too, e.g. to choose one")
    parser.add_argument("--tag", default="", help="added to the results file name")
    parser.add_argument("--skip-eval", action="store_true", help="no evaluation timing")
    parser.add_argument("--skip-exact-eval", action="store_true", help="time only the fast evaluation")
    common.add_out_argument(parser)
    return common.fill_defaults(parser.parse_args(argv), TINY, FULL)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = common.benchmark_device()
    images = np.random.default_rng(0).integers(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
    images_on_device = torch.from_numpy(images).to(device)
    flops = model_flops_per_step(args.arch, args.batch_size, device)
    peak = common.peak_flops(device)
    rows, skipped = [], {}
    path = common.results_path(args.out, "speed", device, "tiny" if args.tiny else args.tag)   # one file per run

    def attempt(name, measure):
        """measure()'s result, or None with the failure recorded under `skipped` (no other figure is lost)."""
        print(f"measuring {name} ...", flush=True)
        try:
            return measure()
        except Exception as error:
            skipped[name] = f"failed: {type(error).__name__}: {error}"
            print(f"  {skipped[name]}", flush=True)

    def add_row(name, measure_row) -> None:
        """Append measure_row()'s row and rewrite the results file (kept if the run is cut short)."""
        row = attempt(name, measure_row)
        if row is not None:
            rows.append(row)
            write_record(path, args, device, flops, peak, rows, skipped, None)

    data = (args, device, images, images_on_device)
    for name in args.variants:
        if name == "engine_compiled" and device.type != "cuda":
            skipped[name] = "skipped: torch.compile is measured on CUDA only"
        else:
            add_row(name, lambda: measure_variant(name, *data, flops, peak))
    for arch in args.ceiling_archs:
        label = f"ceiling[{arch}]"
        add_row(label, lambda: {**measure_variant("ceiling", *data, model_flops_per_step(arch, args.batch_size, device),
                                                  peak, arch=arch, label=label), "arch": arch})
    evaluation = None
    if not args.skip_eval:
        evaluation = attempt("evaluation", lambda: time_evaluation(EVAL_SIZES[args.tiny], not args.skip_exact_eval,
                                                                   device))
    record = write_record(path, args, device, flops, peak, rows, skipped, evaluation)
    if rows:
        common.print_table(rows, ["variant", "views_per_s", "epoch_s", "step_ms", "peak_memory_gib", "mfu"])
    for mode in ("fast", "exact"):
        if evaluation and evaluation[mode]:
            print(f"evaluation {mode}: {evaluation[mode]['seconds']:.1f} s, {evaluation[mode]['accuracies_percent']}")
    print(f"targets: {record['targets']}")
    print(f"wrote {path}")
    return 0


def write_record(path, args, device, flops, peak, rows, skipped, evaluation) -> dict:
    """The results file at `path` as measured so far (rewritten after each variant). Returns the record."""
    record = {
        "benchmark": "speed", **provenance(device),
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "precision": "bf16" if device.type == "cuda"
                   else "fp32", "channels_last": device.type == "cuda", "data": "random uint8 64x64 images",
                   "flops_per_step": flops, "flops_note": "one forward+backward on 2 x batch_size images, "
                   "torch.utils.flop_counter (2 FLOPs per multiply-add)", "peak_bf16_flops": peak},
        "variants": rows, "skipped": skipped, "evaluation": evaluation,
        "targets": targets({r["variant"]: r for r in rows}, evaluation, device),
    }
    common.write_results(path, record)
    return record


def targets(by_name: dict, evaluation: dict | None, device: torch.device) -> dict:
    """Each target as {"value", "target", "met"}; "met" is None when the figure was not measured."""
    def check(value, target, higher_is_better=True):
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        return {"value": value, "target": target, "met": met}
    course, engine, ceiling = (by_name.get(k, {}).get("views_per_s") for k in ("course_pipeline", "engine", "ceiling"))
    on_h100 = device.type == "cuda" and "H100" in torch.cuda.get_device_name(device)
    fast = evaluation and evaluation.get("fast")
    return {
        "engine_vs_course_pipeline": check(engine / course if engine and course else None, 10.0),
        "engine_vs_ceiling": check(engine / ceiling if engine and ceiling else None, 0.85),
        "engine_mfu_h100": check(by_name.get("engine", {}).get("mfu") if on_h100 else None, 0.40),
        "fast_eval_seconds": check(fast["seconds"] if fast and device.type == "cuda" else None, 30.0, False),
        "fast_vs_exact_points": check(evaluation.get("max_abs_difference_points") if evaluation else None, 1.0, False),
    }


if __name__ == "__main__":
    raise SystemExit(main())
