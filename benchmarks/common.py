"""Shared by the benchmark scripts: the --out folder, timing, peak memory, tiny data, results files, the table."""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # the scripts run as `python benchmarks/x.py` from the checkout
    sys.path.insert(0, str(ROOT))

from utils.device import configure_backends, pick_device  # noqa: E402
from utils.provenance import RESULTS_DIR, free_results_path, provenance  # noqa: E402
from utils.synthetic import write_dataset  # noqa: E402

# Dense bf16 peak FLOP/s (no sparsity), from NVIDIA's data sheets. Unknown GPUs get no MFU ("not measured").
BF16_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def add_out_argument(parser, **kwargs) -> None:
    """--out: the folder for the results, $OUT when set, else benchmarks/results."""
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or RESULTS_DIR),
                        help="folder for the results (default: $OUT, else benchmarks/results)", **kwargs)


def fill_defaults(args, tiny: dict, full: dict):
    """Set every argument still None to its --tiny (args.tiny) or full-size default. Returns args."""
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def benchmark_device() -> torch.device:
    """The GPU when there is one, else the CPU, with the engine's backend settings (TF32, cuDNN autotuning)."""
    device = pick_device("auto")
    configure_backends(device)
    return device


def tiny_dataset(folder: Path, spec) -> Path:
    """A generated course-format folder (utils.synthetic) for the --tiny runs, written once."""
    if not (folder / "ood.npz").is_file():
        write_dataset(folder, spec, seed=0, progress=False)
    return folder


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_repeats(run_once, repeats: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of `run_once()` for each of `repeats` runs (the GPU synchronised around each)."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run_once()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    """GPU memory allocated at most since reset_peak_memory, in GiB; None on the CPU (not measured)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of the GPU, or None when unknown (CPU, unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in name), None)


def mfu(flops_per_step: float, steps_per_s: float, peak: float | None) -> float | None:
    """Model FLOP utilisation: achieved model FLOP/s over the peak. None when the peak is unknown."""
    if peak is None or flops_per_step <= 0 or steps_per_s <= 0:
        return None
    return flops_per_step * steps_per_s / peak


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "unknown"


def results_path(out_dir: Path, kind: str, device, tag: str = "") -> Path:
    """<out_dir>/<kind>[-<tag>]-<device>-<date>.json, or <date>b.json, ... when that record exists already."""
    record = provenance(device)
    device_slug = slug(record["device"].split(",")[0])
    name = "-".join(p for p in (kind, tag, device_slug, record["date"][:10]) if p)
    return free_results_path(Path(out_dir), name)


def write_results(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return path


def format_value(value) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """A plain text table of `columns` (default: the first row's keys); None shows as 'not measured'."""
    columns = columns or list(rows[0])
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
