"""Where one training step's GPU time goes: the PyTorch profiler over a few engine steps of the submitted model.

Same step as speed.py's `engine` variant (device-resident uint8 images, per-sample views on the device, bf16,
channels_last). Prints the operators that take the most device time and writes the table and a JSON summary
(time share of augmentation, convolutions, batch norm, element-wise ops, optimizer) under --out.

    python benchmarks/profile_step.py                 # on a GPU
    python benchmarks/profile_step.py --tiny          # CPU smoke run (tests)
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

import common  # noqa: F401  (puts the checkout on sys.path)
from models import ARCH
from speed import engine_runner, fresh_model
from utils.provenance import provenance
from utils.device import configure_backends, pick_device

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


DEVICE = pick_device("auto")
ON_GPU = DEVICE.type == "cuda"


def self_device_us(event) -> float:
    """Self time of an averaged profiler event on the device that ran it, in microseconds (GPU time on CUDA,
    CPU time otherwise; the GPU attribute was renamed from self_cuda_time_total in torch 2.x)."""
    names = ("self_device_time_total", "self_cuda_time_total") if ON_GPU else ("self_cpu_time_total",)
    return next((float(getattr(event, n)) for n in names if hasattr(event, n)), 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(common.ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    arch = args.arch or ("tiny" if args.tiny else ARCH)
    batch = args.batch_size or (8 if args.tiny else 512)
    steps = args.steps or (2 if args.tiny else 10)
    device = DEVICE
    configure_backends(device)
    images = torch.randint(0, 256, (max(4 * batch, 64), 64, 64, 3), dtype=torch.uint8, device=device)
    model, optimizer = fresh_model(arch, device, ON_GPU)
    run = engine_runner(images, model, optimizer, batch, device, "auto")
    run(steps)                                          # warm-up: cuDNN autotuning, allocator
    common.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ON_GPU else [])
    with profile(activities=activities) as prof:
        with record_function("engine_steps"):
            run(steps)
        common.synchronize(device)
    # On CUDA, count kernels only: an operator's device time is also its kernels' time (summing both counts it
    # twice). On the CPU, operators' self times.
    events = [e for e in prof.key_averages() if e.key != "engine_steps"
              and (not ON_GPU or e.device_type == DeviceType.CUDA)]
    total = sum(self_device_us(e) for e in events) or 1.0
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + self_device_us(e)
    top = sorted(events, key=self_device_us, reverse=True)[:25]
    record = {"benchmark": "profile_step", **provenance(device), "arch": arch, "batch_size": batch, "steps": steps,
              "device_ms_per_step": total / steps / 1000,
              "group_share": {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
              "top_ops": [{"op": e.key, "self_device_ms_per_step": self_device_us(e) / steps / 1000,
                           "share": self_device_us(e) / total, "calls_per_step": e.count / steps} for e in top]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"profile-{arch}-{common.slug(record['device'].split(',')[0])}-{record['date'][:10]}.json"
    (out / name).write_text(json.dumps(record, indent=1) + "\n")
    for e in record["top_ops"][:15]:
        print(f"{e['share']:6.1%}  {e['self_device_ms_per_step']:8.3f} ms/step  {e['op']}")
    print("groups:", {k: f"{v:.1%}" for k, v in record["group_share"].items()})
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
