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

Writes speed-<device>-<date>.json under --out ($OUT when set, else benchmarks/results) and prints a table.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T

import common  # noqa: F401  (puts the checkout on sys.path)
from models import ARCH, ImageEncoder
from utils import augment, losses, probes
from utils.optim import build_optimizer
from utils.provenance import provenance
from utils.device import configure_backends, pick_device
from utils.steps import autocast_context, project_views, training_step

VARIANTS = ("course_pipeline", "engine", "engine_compiled", "ceiling")


# ----------------------------------------------------------------------------------------------------------
# Variant 1: the course-style CPU pipeline
# ----------------------------------------------------------------------------------------------------------

def course_transform() -> T.Compose:
    """The per-sample CPU recipe students use: PIL crop, flip, jitter, grayscale, blur, then ToTensor."""
    return T.Compose([
        T.RandomResizedCrop(64, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(7, sigma=(0.1, 2.0))], p=0.5), T.ToTensor()])


class TwoViewDataset(Dataset):
    """uint8 (N, 64, 64, 3) images -> (view 1, view 2), each (3, 64, 64) float in [0, 1]."""

    def __init__(self, images: np.ndarray):
        self.images, self.transform = images, course_transform()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i])
        return self.transform(image), self.transform(image)


def course_pipeline_runner(images, model, optimizer, batch_size, workers, device):
    """Returns run(steps): `steps` float32 training steps fed by the DataLoader (loading included)."""
    loader = DataLoader(TwoViewDataset(images), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    def run(steps):
        for _ in range(steps):
            v1, v2 = (v.to(device, non_blocking=True) for v in next_batch())
            _, z = model(torch.cat([v1, v2]))
            loss = losses.nt_xent(z.view(2, batch_size, -1).float(), temperature=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return run


# ----------------------------------------------------------------------------------------------------------
# Variants 2 and 3: the engine, and the no-augmentation ceiling
# ----------------------------------------------------------------------------------------------------------

def engine_runner(images_on_device, model, optimizer, batch_size, device, precision):
    """Returns run(steps): the shipped training_step on random batches of device-resident uint8 images."""
    view_cfgs = augment.default_views(2)
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = autocast_context(device, precision)
    objective = lambda z, g: losses.nt_xent(z, temperature=0.1)  # noqa: E731
    n = images_on_device.shape[0]

    def run(steps):
        for _ in range(steps):
            index = torch.randint(0, n, (batch_size,), device=device, generator=generator)
            training_step(model, images_on_device[index], view_cfgs, objective, optimizer, generator, autocast)
    return run


def ceiling_runner(model, optimizer, batch_size, device, precision):
    """Returns run(steps): forward, backward and update on two fixed random views already on the device."""
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    views = [torch.rand(batch_size, 3, 64, 64, device=device).to(memory_format=memory_format) for _ in range(2)]
    autocast = autocast_context(device, precision)

    def run(steps):
        for _ in range(steps):
            with autocast:
                loss = losses.nt_xent(project_views(model, views).float(), temperature=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return run


def measure_variant(name, args, device, images, images_on_device, flops, peak, precision, channels_last,
                    arch=None, label=None) -> dict:
    """One row of the table: a fresh model (args.arch, or `arch`) and optimizer, fed the way variant `name`
    says; the row is called `label` (default `name`)."""
    model, optimizer = fresh_model(arch or args.arch, device, channels_last and name != "course_pipeline")
    label = label or name
    if name == "course_pipeline":
        make = lambda: course_pipeline_runner(images, model, optimizer, args.batch_size, args.workers, device)  # noqa: E731
        return measure(label, make, args, device, args.images, None, peak, steps=args.course_steps)
    if name in ("engine", "engine_compiled"):
        run_model = torch.compile(model) if name == "engine_compiled" else model
        make = lambda: engine_runner(images_on_device, run_model, optimizer, args.batch_size, device, precision)  # noqa: E731
        return measure(label, make, args, device, args.images, flops, peak)
    make = lambda: ceiling_runner(model, optimizer, args.batch_size, device, precision)  # noqa: E731
    return measure(label, make, args, device, args.images, flops, peak)


def model_flops_per_step(arch: str, batch_size: int, device: torch.device, precision: str) -> float:
    """FLOPs of one forward + backward of the model on 2 x batch_size 64-px images (torch's flop counter:
    convolutions and matmuls, 2 FLOPs per multiply-add). Counted on a fresh model so no state changes."""
    model = ImageEncoder(arch).to(device)
    x = torch.rand(2 * batch_size, 3, 64, 64, device=device)
    counter = FlopCounterMode(display=False)
    with counter, autocast_context(device, precision):
        _, z = model(x)
        z.float().sum().backward()
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------------------
# Measuring one variant
# ----------------------------------------------------------------------------------------------------------

def fresh_model(arch: str, device: torch.device, channels_last: bool):
    model = ImageEncoder(arch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, build_optimizer("adamw", model, 1e-3, 1e-4, device)


def measure(name, make_runner, args, device, n_images, flops_per_step, peak, steps=None):
    """Warm up, then time `steps` (default args.steps) steps `args.repeats` times; the figures use the median
    repeat."""
    steps = steps or args.steps
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    run = make_runner()
    warmup_start = time.perf_counter()
    run(args.warmup)
    common.synchronize(device)
    warmup_s = time.perf_counter() - warmup_start
    times = common.time_repeats(lambda: run(steps), args.repeats, device)
    step_s = common.median(times) / steps
    views_per_s = 2 * args.batch_size / step_s
    row = {"variant": name, "views_per_s": views_per_s, "images_per_s": views_per_s / 2,
           "epoch_s": 2 * n_images / views_per_s, "step_ms": 1000 * step_s, "steps_per_repeat": steps,
           "repeat_s": times, "warmup_s": warmup_s,
           "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
           "model_gflops_per_step": flops_per_step / 1e9 if flops_per_step else None,
           "model_tflops_per_s": None, "mfu": None}
    if flops_per_step is not None:
        row["model_tflops_per_s"] = flops_per_step / step_s / 1e12
        row["mfu"] = common.mfu(flops_per_step, 1 / step_s, peak)
    return row


# ----------------------------------------------------------------------------------------------------------
# The grader's protocol at course size
# ----------------------------------------------------------------------------------------------------------

def class_centres(classes: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((classes, dim)).astype(np.float32)


def clustered_features(centres: np.ndarray, n_per_class: int, seed: int, spread: float = 5.0):
    """Class-structured features like an encoder's: class centre plus Gaussian noise, L2-normalised and scaled
    by sqrt(dim) as get_features does. Returns (features float32 (C * n_per_class, dim), labels int64 (N,))."""
    rng = np.random.default_rng(seed)
    classes, dim = centres.shape
    labels = np.repeat(np.arange(classes), n_per_class)
    features = centres[labels] + spread * rng.standard_normal((len(labels), dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True) / np.sqrt(dim)
    return features, labels


def time_evaluation(sizes: dict, exact: bool, device: torch.device) -> dict:
    """The four probes of the grader's protocol, fast (torch) and optionally exact (scikit-learn).
    train and val share class centres (ID); OOD has its own classes."""
    id_centres = class_centres(sizes["classes"], sizes["dim"], seed=1)
    ood_centres = class_centres(sizes["classes"], sizes["dim"], seed=2)
    train = clustered_features(id_centres, sizes["train_per_class"], seed=3)
    val = clustered_features(id_centres, sizes["val_per_class"], seed=4)
    ood = clustered_features(ood_centres, sizes["ood_per_class"], seed=5)
    result = {"features": {**sizes, "kind": "class-centre + Gaussian noise (spread 5), L2-normalised x sqrt(dim)"},
              "fast": None, "exact": None}
    for mode in (["fast", "exact"] if exact else ["fast"]):
        start = time.perf_counter()
        accuracies = probes.evaluate_protocol(train, val, ood, fast=mode == "fast", progress=False, device=device)
        common.synchronize(device)
        result[mode] = {"seconds": time.perf_counter() - start,
                        "accuracies_percent": {k: float(getattr(accuracies, k))
                                               for k in ("id_knn", "id_linear", "ood_knn", "ood_linear")}}
    if exact:
        fast, slow = result["fast"]["accuracies_percent"], result["exact"]["accuracies_percent"]
        result["max_abs_difference_points"] = max(abs(fast[k] - slow[k]) for k in fast)
    return result


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke configuration (tiny arch, few steps)")
    parser.add_argument("--arch", default=None, help=f"model architecture (default: {ARCH!r}, the submitted one)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 512 (tiny: 16)")
    parser.add_argument("--images", type=int, default=None, help="data set size (default 100,000; tiny: 256)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 200; tiny: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 30; tiny: 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats, median reported (default 3; tiny: 2)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 4; tiny: 0)")
    parser.add_argument("--course-steps", type=int, default=None,
                        help="timed steps per repeat of course_pipeline, which is much slower (default 30; tiny: 2)")
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS),
                        help="training variants to time (none: only the evaluation)")
    parser.add_argument("--ceiling-archs", nargs="*", default=[],
                        help="other architectures whose ceiling (model speed alone) is timed too, e.g. to choose one")
    parser.add_argument("--tag", default="", help="added to the results file name")
    parser.add_argument("--skip-eval", action="store_true", help="no evaluation timing")
    parser.add_argument("--skip-exact-eval", action="store_true", help="time only the fast evaluation")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(common.ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    defaults = (dict(arch="tiny", batch_size=16, images=256, steps=2, course_steps=2, warmup=1, repeats=2, workers=0)
                if args.tiny else
                dict(arch=ARCH, batch_size=512, images=100_000, steps=200, course_steps=30, warmup=30, repeats=3,
                     workers=4))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device("auto")
    configure_backends(device)
    precision = "auto"                         # bf16 on CUDA, fp32 on the CPU, as the engine ships
    channels_last = device.type == "cuda"
    images = np.random.default_rng(0).integers(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
    images_on_device = torch.from_numpy(images).to(device)
    flops = model_flops_per_step(args.arch, args.batch_size, device, precision)
    peak = common.peak_flops(device)

    rows, skipped = [], {}

    def add_row(name, measure_row) -> None:
        """Append measure_row()'s row and rewrite the results file (kept if the call is cut short); a failure
        is recorded under `skipped` and costs no other row's figures (one device call)."""
        print(f"measuring {name} ...", flush=True)
        try:
            rows.append(measure_row())
            write_record(args, device, flops, peak, channels_last, rows, skipped, None)
        except Exception as error:
            skipped[name] = f"failed: {type(error).__name__}: {error}"
            print(f"  {skipped[name]}", flush=True)

    common_args = (args, device, images, images_on_device)
    for name in args.variants:
        if name == "engine_compiled" and device.type != "cuda":
            skipped[name] = "skipped: torch.compile is measured on CUDA only"
            continue
        add_row(name, lambda: measure_variant(name, *common_args, flops, peak, precision, channels_last))
    for arch in args.ceiling_archs:
        label = f"ceiling[{arch}]"
        add_row(label, lambda: {**measure_variant(
            "ceiling", *common_args, model_flops_per_step(arch, args.batch_size, device, precision), peak,
            precision, channels_last, arch=arch, label=label), "arch": arch})

    evaluation = None
    if not args.skip_eval:
        sizes = (dict(classes=10, train_per_class=100, val_per_class=10, ood_per_class=20, dim=1000) if args.tiny
                 else dict(classes=200, train_per_class=500, val_per_class=50, ood_per_class=50, dim=1000))
        print("timing the grader's protocol ...", flush=True)
        try:
            evaluation = time_evaluation(sizes, exact=not args.skip_exact_eval, device=device)
        except Exception as error:
            skipped["evaluation"] = f"failed: {type(error).__name__}: {error}"
            print(f"  {skipped['evaluation']}", flush=True)
    record, path = write_record(args, device, flops, peak, channels_last, rows, skipped, evaluation)
    if rows:
        common.print_table(rows, ["variant", "views_per_s", "epoch_s", "step_ms", "peak_memory_gib", "mfu"])
    if evaluation:
        for mode in ("fast", "exact"):
            if evaluation[mode]:
                print(f"evaluation {mode}: {evaluation[mode]['seconds']:.1f} s, {evaluation[mode]['accuracies_percent']}")
    print(f"targets: {record['targets']}")
    print(f"wrote {path}")
    return 0


def write_record(args, device, flops, peak, channels_last, rows, skipped, evaluation):
    """The results file as measured so far (rewritten after each variant). Returns (record, path)."""
    by_name = {r["variant"]: r for r in rows}
    record = {
        "benchmark": "speed", **provenance(device),
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "precision": "bf16" if device.type == "cuda"
                   else "fp32", "channels_last": channels_last, "data": "random uint8 64x64 images",
                   "flops_per_step": flops, "flops_note": "one forward+backward on 2 x batch_size images, "
                   "torch.utils.flop_counter (2 FLOPs per multiply-add)", "peak_bf16_flops": peak},
        "variants": rows, "skipped": skipped, "evaluation": evaluation,
        "targets": targets(by_name, evaluation, device),
    }
    path = common.results_path(Path(args.out), "speed", device, "tiny" if args.tiny else args.tag)
    return record, common.write_results(path, record)


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
