"""Where and from what a figure was measured: device, software, commit, date. Every results file records it, under
a name that no earlier record holds (`free_results_path`)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"      # every committed results file


def git_commit(root: Path = ROOT) -> dict:
    """{"commit": full hash or None, "dirty": True when tracked files differ from it (None if unknown)}.

    $CS461_COMMIT, when set, wins and the record says so ("commit_from"): a copy of the working tree sent to a
    GPU machine may carry no git history, or another commit's, so the command that sends it names the commit."""
    if os.environ.get("CS461_COMMIT"):
        return {"commit": os.environ["CS461_COMMIT"], "dirty": None, "commit_from": "CS461_COMMIT"}
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def device_description(device: torch.device | str | None = None) -> str:
    """"NVIDIA H100 80GB HBM3" for a GPU; "cpu: <processor>, <n> cores" otherwise."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    return f"cpu: {name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def provenance(device: torch.device | str | None = None) -> dict:
    """The record every results file starts with."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device_description(device), "torch": torch.__version__,
            "python": platform.python_version(), **git_commit()}


def free_results_path(folder: Path, name: str) -> Path:
    """<folder>/<name>.json, else <name>b.json, <name>c.json, ...: the first name not taken, so that a second run
    on the same day writes a record beside the first instead of over it."""
    for suffix in ("", *"bcdefghijklmnopqrstuvwxyz"):
        path = Path(folder) / f"{name}{suffix}.json"
        if not path.exists():
            return path
    raise FileExistsError(f"{folder}: {name}.json and {name}b.json to {name}z.json all exist; move some away")
