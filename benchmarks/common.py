"""Shared by the benchmark scripts: timing, results files, the printed table."""
from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # the scripts run as `python benchmarks/x.py` from the checkout
    sys.path.insert(0, str(ROOT))

from utils.provenance import provenance  # noqa: E402

# Dense bf16 peak FLOP/s (no sparsity), from NVIDIA's data sheets. Unknown GPUs get no MFU ("not measured").
BF16_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


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


def results_path(out_dir: Path, kind: str, device: torch.device, tag: str = "") -> Path:
    record = provenance(device)
    device_slug = slug(record["device"].split(",")[0])
    name = "-".join(p for p in (kind, tag, device_slug, record["date"][:10]) if p)
    return Path(out_dir) / f"{name}.json"


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


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain text table; None shows as 'not measured'."""
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
