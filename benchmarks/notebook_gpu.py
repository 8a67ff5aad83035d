"""The student's real path on a GPU: CS461_Assignment1.ipynb run headless in the full profile on real photos,
from the first cell through Section 7 (eval.py --fast), with a record of what each section took.

What a student does on the hub, minus the browser: the committed notebook's cells, in order, in one IPython
shell (the interpreter a Jupyter kernel wraps, so `%matplotlib inline` and `display` behave as there), with the
full profile's settings, a short training budget ($CS461_TIME_BUDGET_MIN) and a demo identity in Section 0.
The record (JSON, rewritten after every section so that a cut call keeps what it measured) holds the time and
the peak GPU memory of each section, the batch-size line of the memory fit, the training summary, and Section 7's
hand-in (utils/submission/handin.py): its verdict and eval.py's four accuracies. After every section the notebook
file at $CS461_NOTEBOOK_PATH is saved with each section's printed output, as a student saves before Section 7
(which hands in the file as saved).

    # here (needs the Tiny ImageNet pool, see tiny64_packs.py, and pip): the data pack and the IPython wheels the GPU machine lacks
    python benchmarks/tiny64_packs.py pack --out .data/nbgpu.npz --train 0:150 --val 50 --ood-draws 1
    (the wheel download command is in benchmarks/README.md)
    # on the GPU machine, one call:
    python3 benchmarks/notebook_gpu.py --pack .data/nbgpu.npz --budget-min 2
    # anywhere: the plan (folders, environment, commands), without running anything
    python benchmarks/notebook_gpu.py --pack .data/nbgpu.npz --dry-run

Files: <out>/notebook_gpu-<tag>-<device>-<date>.json (the record) and <out>/notebook_gpu.log (every cell's
output), <out> being $OUT when set. Weights, checkpoints and figures stay under --work (/tmp), not in the
checkout: the full profile would otherwise replace the shipped final_model.safetensors.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # run as `python benchmarks/notebook_gpu.py` from the checkout
    sys.path.insert(0, str(ROOT))

NOTEBOOK = ROOT / "CS461_Assignment1.ipynb"
# Section 0 must be filled in for Section 7 to hand in the notebook; an obvious benchmark identity.
IDENTITY = 'SCIPER = 100000  # benchmark identity (benchmarks/notebook_gpu.py)\nLAST_NAME = "Benchmark"\nFIRST_NAME = "GPU"\n'


@dataclasses.dataclass
class Plan:
    """Everything the run will do, decided before anything runs (the dry run prints it)."""
    profile: str
    budget_min: float
    work: Path                      # scratch: decoded data, weights, checkpoints, figures, submission
    data_dir: Path
    out: Path                       # where the record and the log go
    unpack: list[str] | None        # the command that decodes the packs, or None (data_dir given)
    env: dict[str, str]             # set before the first cell, read by the notebook's settings cell

    @property
    def executed_notebook(self) -> Path:
        return self.work / NOTEBOOK.name


def make_plan(args: argparse.Namespace) -> Plan:
    work = Path(args.work)
    if args.pack:
        data_dir = work / "data"
        unpack = [sys.executable, str(ROOT / "benchmarks" / "tiny64_packs.py"), "unpack", "--out", str(data_dir),
                  *[str(p) for p in args.pack]]
    else:
        data_dir, unpack = Path(args.data_dir), None
    env = {
        "CS461_PROFILE": args.profile,
        "CS461_DATA_DIR": str(data_dir),
        "CS461_TIME_BUDGET_MIN": f"{args.budget_min:g}",
        "CS461_OUTPUT_DIR": str(work / "output"),
        "CS461_SUBMISSION_DIR": str(work / "submission"),
        "CS461_NOTEBOOK_PATH": str(work / NOTEBOOK.name),
        "CS461_STATIC_WIDGETS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return Plan(args.profile, args.budget_min, work, data_dir, Path(args.out), unpack, env)


# ----------------------------------------------------------------------------------------------------------
# The notebook, cell by cell
# ----------------------------------------------------------------------------------------------------------

def notebook_cells(path: Path = NOTEBOOK) -> list[dict]:
    """The notebook's cells (its JSON; no nbformat needed), with Section 0's identity cell filled in."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    identity = [c for c in cells if "identity" in c.get("metadata", {}).get("tags", [])]
    if len(identity) != 1:
        raise SystemExit(f"{path}: expected exactly one cell tagged 'identity', found {len(identity)}")
    identity[0]["source"] = IDENTITY
    return cells


def source_of(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def titled_cells(cells: list[dict]) -> list[tuple[str, dict]]:
    """(section title, cell) for every cell: a markdown cell starting with "# " opens a section ("# 0. SCIPER
    Number and Name" -> "0. SCIPER Number and Name"); "##" headers stay in the section they are in. Cells before
    the first numbered section (imports, the environment check) are in "setup"."""
    title, out = "setup", []
    for cell in cells:
        text = source_of(cell)
        if cell["cell_type"] == "markdown":
            first = text.splitlines()[0] if text else ""
            if re.match(r"# \d+\.", first):
                title = first[2:].strip()
        out.append((title, cell))
    return out


def sections(cells: list[dict]) -> list[tuple[str, list[str]]]:
    """[(section title, [code cell sources])] in the notebook's order (titled_cells), sections without code left out."""
    out: dict[str, list[str]] = {}
    for title, cell in titled_cells(cells):
        out.setdefault(title, [])
        if cell["cell_type"] == "code":
            out[title].append(source_of(cell))
    return [(title, code) for title, code in out.items() if code]


class Tee:
    """A text stream that writes to several (the terminal and the log)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@functools.cache
def _shell_class():
    from IPython.core.interactiveshell import InteractiveShell

    class HeadlessShell(InteractiveShell):
        def enable_gui(self, gui=None):
            """The inline backend needs no GUI event loop (ipykernel's shell does the same for it)."""

    return HeadlessShell


def headless_shell():
    """The IPython shell of this process (one, as a Jupyter kernel holds one), its namespace emptied: magics
    (`%matplotlib inline`), display and the display hook work; tracebacks are plain text (they go into the log)."""
    shell = _shell_class().instance()
    shell.reset(new_session=False)
    shell.run_line_magic("colors", "nocolor")
    return shell


def run_sections(parts: list[tuple[str, list[str]]], log, on_section=None, cuda: bool = False):
    """Run every code cell in one IPython shell, section by section. Returns (shell, [per-section records]).
    Each record: title, seconds, cells, output (text), peak_gpu_mib (CUDA), error (or None). Stops at the first
    failing cell, as Run All does. on_section(records) is called after each section (to save the record)."""
    shell = headless_shell()
    terminal_out, terminal_err = sys.stdout, sys.stderr      # what the cells print also shows as it comes
    records = []
    for title, sources in parts:
        if cuda:
            import torch
            torch.cuda.reset_peak_memory_stats()
        captured = io.StringIO()
        error, start = None, time.perf_counter()
        log.write(f"\n===== {title} =====\n")
        with contextlib.redirect_stdout(Tee(terminal_out, log, captured)), \
                contextlib.redirect_stderr(Tee(terminal_err, log, captured)):
            for n, source in enumerate(sources):
                result = shell.run_cell(source, store_history=False)
                if not result.success:
                    failure = result.error_in_exec or result.error_before_exec
                    error = f"cell {n + 1} of the section: {type(failure).__name__}: {failure}"
                    break
        record = {"section": title, "seconds": round(time.perf_counter() - start, 2), "cells": len(sources),
                  "error": error, "output": captured.getvalue()}
        if cuda:
            import torch
            record["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        records.append(record)
        log.flush()
        if on_section:
            on_section(records)
        if error:
            break
    return shell, records


# ----------------------------------------------------------------------------------------------------------
# What the run showed
# ----------------------------------------------------------------------------------------------------------

def save_with_outputs(cells: list[dict], records: list[dict], path: Path) -> None:
    """The notebook at `path` as a student saves it: the code cells of every section that ran carry an execution
    count, the first of each its section's printed output (records); the others are as handed out. Section 7
    hands in this file."""
    printed = {r["section"]: r["output"] for r in records}
    saved = []
    for title, cell in titled_cells(cells):
        cell = dict(cell)
        if cell["cell_type"] == "code":
            ran = title in printed
            first = ran and not any(t == title and c["cell_type"] == "code" and c.get("outputs") for t, c in saved)
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": printed[title] or "\n"}] \
                if first else []
            cell["execution_count"] = 1 if ran else None
        saved.append((title, cell))
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    notebook["cells"] = [cell for _, cell in saved]
    path.write_text(json.dumps(notebook, indent=1))


def memory_fit_line(records: list[dict]) -> str | None:
    """The one line utils.device.fit_batch_to_memory printed ("GPU memory: ..."), if any."""
    for record in records:
        for line in record["output"].splitlines():
            if line.startswith("GPU memory:"):
                return line
    return None


def summary(shell, records: list[dict]) -> dict:
    """What the notebook's variables and printed output say: settings, training, accuracies."""
    ns = shell.user_ns if shell is not None else {}
    out: dict = {"memory_fit": memory_fit_line(records)}
    if "cfg" in ns:
        out["config"] = dataclasses.asdict(ns["cfg"])
    if "result" in ns:
        metrics = json.loads(Path(ns["result"].metrics_path).read_text())
        out["training"] = {k: metrics.get(k) for k in ("device", "steps", "epochs", "train_minutes", "final")}
    if "final" in ns:
        out["notebook_protocol_percent"] = ns["final"].as_dict()
    if "handed_in" in ns:                               # Section 7's hand-in (utils.submission.handin.HandIn)
        handed = ns["handed_in"]
        out["eval"] = {"copied": handed.copied, "ok": handed.ok, "verdict": handed.lines,
                       "accuracies_percent": (handed.result or {}).get("accuracies_percent"),
                       "summary": (handed.final or {}).get("summary")}
    return out


def write_record(path: Path, plan: Plan, device_info: dict, records: list[dict], extra: dict) -> None:
    from utils.device import pick_device
    from utils.provenance import provenance
    device = pick_device("auto")
    peaks = [r["peak_gpu_mib"] for r in records if "peak_gpu_mib" in r]
    record = {
        "benchmark": "notebook_gpu",
        "what": "CS461_Assignment1.ipynb run headless in one IPython shell, first cell through Section 7 "
                "(its hand-in: eval.py --fast on CUDA), saved after every section, with the settings below",
        **provenance(device), **device_info,
        "profile": plan.profile, "budget_min": plan.budget_min, "data_dir": str(plan.data_dir),
        "environment": plan.env,
        "sections": [{k: v for k, v in r.items() if k != "output"} for r in records],
        "notebook_seconds": round(sum(r["seconds"] for r in records), 1),
        "peak_gpu_mib": max(peaks) if peaks else None,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")


def describe_gpu(device) -> dict:
    """The GPU's name, size and free memory when the run starts (other processes may hold some)."""
    if device.type != "cuda":
        return {"gpu": None}
    import torch
    free, total = torch.cuda.mem_get_info(device)
    return {"gpu": torch.cuda.get_device_name(device), "gpu_total_mib": round(total / 2**20),
            "gpu_free_mib_at_start": round(free / 2**20)}


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--pack", type=Path, nargs="+", help="tiny64 pack(s) to decode into the data folder")
    data.add_argument("--data-dir", type=Path, help="a course-format data folder to use as it is")
    parser.add_argument("--budget-min", type=float, default=2.0, help="training budget, minutes (default 2)")
    parser.add_argument("--profile", choices=("full", "short"), default="full",
                        help="the notebook's profile (default full; short only to try the runner on a CPU)")
    parser.add_argument("--work", default="/tmp/notebook_gpu", help="scratch folder (default %(default)s)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"),
                        help="where the record and the log go (default: $OUT, else benchmarks/results)")
    parser.add_argument("--tag", default="", help="added to the record's file name")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit: runs nothing")
    args = parser.parse_args(argv)
    if args.budget_min <= 0:
        parser.error(f"--budget-min must be > 0, got {args.budget_min}")
    return args


def print_plan(plan: Plan, parts: list[tuple[str, list[str]]]) -> None:
    print(f"profile {plan.profile}, training budget {plan.budget_min:g} min")
    print(f"data: {plan.data_dir}" + (f" (decoded by: {' '.join(plan.unpack)})" if plan.unpack else " (as it is)"))
    print("environment:\n" + "\n".join(f"  {k}={v}" for k, v in plan.env.items()))
    print(f"record and log: {plan.out}/")
    print("sections: " + ", ".join(f"{title} ({len(code)} cells)" for title, code in parts))


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    cells = notebook_cells()
    parts = sections(cells)
    print_plan(plan, parts)
    if args.dry_run:
        return 0
    from utils.device import pick_device
    device = pick_device("auto")
    cuda = device.type == "cuda"
    if plan.profile == "full" and not cuda:
        raise SystemExit("the full profile needs a CUDA GPU and none is visible here; run with --dry-run to see "
                         "the plan, or --profile short to try the runner on the CPU")
    plan.work.mkdir(parents=True, exist_ok=True)
    tag = "-".join(p for p in (plan.profile, f"{plan.budget_min:g}min", args.tag) if p)
    import common                                       # benchmarks/common.py: the results file's name
    record_path = common.results_path(plan.out, "notebook_gpu", device, tag)
    device_info = describe_gpu(device)
    extra: dict = {}
    if plan.unpack:
        start = time.perf_counter()
        subprocess.run(plan.unpack, check=True)
        extra["unpack_seconds"] = round(time.perf_counter() - start, 1)
    # The notebook hands in the file at CS461_NOTEBOOK_PATH: the identity-filled copy, saved after every section.
    save_with_outputs(cells, [], plan.executed_notebook)
    os.environ.update(plan.env)
    os.chdir(ROOT)                                      # the notebook imports models and utils from here

    def save(records):
        write_record(record_path, plan, device_info, records, extra)
        save_with_outputs(cells, records, plan.executed_notebook)

    plan.out.mkdir(parents=True, exist_ok=True)
    with open(plan.out / "notebook_gpu.log", "w") as log:
        shell, records = run_sections(parts, log, on_section=save, cuda=cuda)
    extra.update(summary(shell, records))
    save(records)
    print(f"\nwrote {record_path}")
    for r in records:
        peak = f"{r['peak_gpu_mib']:9,.0f} MiB peak" if "peak_gpu_mib" in r else ""
        print(f"  {r['section'][:45]:45s} {r['seconds']:7.1f} s {peak}" + (f"  FAILED: {r['error']}" if r["error"] else ""))
    if extra.get("memory_fit"):
        print(f"  {extra['memory_fit']}")
    handed = extra.get("eval") or {}
    print(f"  Section 7: {handed.get('summary')} eval.py's accuracies {handed.get('accuracies_percent')}")
    failed = any(r["error"] for r in records) or not handed.get("ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
