"""Where one training step's GPU time goes: the PyTorch profiler over a few engine steps of the submitted model.

Same step as speed.py's `engine` variant (device-resident uint8 images, per-sample views on the device, bf16,
channels_last). Prints the operators that take the most device time and writes
profile-<arch>-<device>-<date>.json under --out: device time per step, the share of each group (augmentation,
convolutions, batch norm, element-wise ops, optimizer, ...) and the top operators.

    python benchmarks/profile_step.py                 # on a GPU
    python benchmarks/profile_step.py --tiny          # CPU smoke run (tests)
"""
from __future__ import annotations

import argparse

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

import common
from models import ARCH
from speed import engine_runner, fresh_model
from utils.provenance import provenance

# Kernel- or operator-name fragments -> the group they count towards (first match wins). On CUDA the names are
# kernels' (cuDNN convolutions are "sm90_xmma_*_implicit_gemm_*"; the per-sample blur is a depthwise conv).
GROUPS = [("batch_norm", "batch norm"), ("implicit_gemm", "convolution"), ("depthwise", "augmentation"),
          ("grid_sampler", "augmentation"), ("convolution", "convolution"), ("conv", "convolution"),
          ("gemm", "matmul"), ("mm", "matmul"), ("foreach", "optimizer"), ("adam", "optimizer"),
          ("relu", "element-wise"), ("threshold", "element-wise"), ("elementwise", "element-wise"),
          ("add", "element-wise"), ("mul", "element-wise"), ("where", "element-wise"), ("clamp", "element-wise"),
          ("reduce", "reductions"), ("copy", "copies and casts")]


def group_of(name: str) -> str:
    lowered = name.lower()
    return next((group for fragment, group in GROUPS if fragment in lowered), "other")


def self_device_us(event, on_gpu: bool) -> float:
    """Self time of an averaged profiler event on the device that ran it, in microseconds (GPU time on CUDA,
    CPU time otherwise; the GPU attribute was renamed from self_cuda_time_total in torch 2.x)."""
    names = ("self_device_time_total", "self_cuda_time_total") if on_gpu else ("self_cpu_time_total",)
    return next((float(getattr(event, n)) for n in names if hasattr(event, n)), 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--arch", default=None, help=f"default {ARCH!r} (tiny: 'tiny')")
    parser.add_argument("--batch-size", type=int, default=None, help="default 512 (tiny: 8)")
    parser.add_argument("--steps", type=int, default=None, help="profiled steps (default 10; tiny: 2)")
    common.add_out_argument(parser)
    args = common.fill_defaults(parser.parse_args(argv), dict(arch="tiny", batch_size=8, steps=2),
                                dict(arch=ARCH, batch_size=512, steps=10))
    device = common.benchmark_device()
    on_gpu = device.type == "cuda"
    images = torch.randint(0, 256, (max(4 * args.batch_size, 64), 64, 64, 3), dtype=torch.uint8, device=device)
    model, optimizer = fresh_model(args.arch, device, on_gpu)
    run = engine_runner(images, model, optimizer, args.batch_size, device)
    run(args.steps)                                     # warm-up: cuDNN autotuning, allocator
    common.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
        with record_function("engine_steps"):
            run(args.steps)
        common.synchronize(device)
    # On CUDA, count kernels only: an operator's device time is also its kernels' time (summing both counts it
    # twice). On the CPU, operators' self times.
    timed = [(e, self_device_us(e, on_gpu)) for e in prof.key_averages()
             if e.key != "engine_steps" and (not on_gpu or e.device_type == DeviceType.CUDA)]
    total = sum(us for _, us in timed) or 1.0
    groups: dict[str, float] = {}
    for e, us in timed:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + us
    steps = args.steps
    record = {"benchmark": "profile_step", **provenance(device), "arch": args.arch, "batch_size": args.batch_size,
              "steps": steps, "device_ms_per_step": total / steps / 1000,
              "group_share": {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
              "top_ops": [{"op": e.key, "self_device_ms_per_step": us / steps / 1000, "share": us / total,
                           "calls_per_step": e.count / steps} for e, us in sorted(timed, key=lambda t: -t[1])[:25]]}
    path = common.write_results(common.results_path(args.out, "profile", device, args.arch), record)
    for e in record["top_ops"][:15]:
        print(f"{e['share']:6.1%}  {e['self_device_ms_per_step']:8.3f} ms/step  {e['op']}")
    print("groups:", {k: f"{v:.1%}" for k, v in record["group_share"].items()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
