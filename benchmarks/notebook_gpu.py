"""The student's path on a GPU: CS461_Assignment1.ipynb run headless in the full profile on real photos, from the
first cell through Section 7 (its hand-in, eval.py --fast), with a record of what each section took.

The committed notebook's cells run in order in one IPython shell (what a Jupyter kernel wraps: `%matplotlib
inline` and `display` behave as there), with the full profile's settings, a short training budget
($CS461_TIME_BUDGET_MIN) and a benchmark identity in Section 0. The data is Tiny ImageNet, not the course's, so
Section 7 runs as a demo ($CS461_DEMO=1: eval.py --demo accepts weights trained on other data and the untouched
report draft). After every section the notebook at $CS461_NOTEBOOK_PATH is saved with the printed output, as a
student saves before Section 7 (which hands in the file as saved).

    # here (needs the Tiny ImageNet pool): the data pack; the IPython wheels the GPU machine lacks are
    # notebook_gpu_wheels.txt (the download command is in benchmarks/README.md)
    python benchmarks/tiny64_packs.py pack --out .data/nbgpu.npz --train 0:150 --val 50 --ood-draws 1
    python3 benchmarks/notebook_gpu.py --pack .data/nbgpu.npz --budget-min 2      # on the GPU machine
    python benchmarks/notebook_gpu.py --pack .data/nbgpu.npz --dry-run            # anywhere: the plan only

Writes under --out notebook_gpu-<tag>-<device>-<date>.json, rewritten after every section (each section's time
and peak GPU memory, the memory fit's batch-size line, the training summary, Section 7's verdict and eval.py's
four accuracies), and notebook_gpu.log (every cell's output). Weights, checkpoints and figures stay under --work:
the full profile would otherwise replace the checkout's final_model.safetensors.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common
from utils.device import pick_device
from utils.notebook_file import NOTEBOOK, cell_source, fill_identity, read_notebook, sectioned_cells
from utils.provenance import provenance
from utils.submission.course import DEMO_ENV

IDENTITY = ('SCIPER = 100000  # benchmark identity (benchmarks/notebook_gpu.py)\n'
            'LAST_NAME = "Benchmark"\nFIRST_NAME = "GPU"\n')


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


def make_plan(args: argparse.Namespace) -> Plan:
    work = Path(args.work)
    data_dir = work / "data" if args.pack else Path(args.data_dir)
    unpack = [sys.executable, str(common.ROOT / "benchmarks" / "tiny64_packs.py"), "unpack", "--out", str(data_dir),
              *map(str, args.pack)] if args.pack else None
    env = {"CS461_PROFILE": args.profile, "CS461_DATA_DIR": str(data_dir),
           "CS461_TIME_BUDGET_MIN": f"{args.budget_min:g}", "CS461_OUTPUT_DIR": str(work / "output"),
           "CS461_SUBMISSION_DIR": str(work / "submission"), "CS461_NOTEBOOK_PATH": str(work / NOTEBOOK.name),
           "CS461_STATIC_WIDGETS": "1", DEMO_ENV: "1", "PYTHONUNBUFFERED": "1"}
    return Plan(args.profile, args.budget_min, work, data_dir, Path(args.out), unpack, env)


def notebook_cells(path: Path = NOTEBOOK) -> list[dict]:
    """The notebook's cells (its JSON; no nbformat needed), with Section 0's identity cell filled in."""
    cells = read_notebook(path)["cells"]
    fill_identity(cells, IDENTITY, path)
    return cells


def sections(cells: list[dict]) -> list[tuple[str, list[str]]]:
    """[(section title, [code cell sources])] in the notebook's order, sections without code left out."""
    out: dict[str, list[str]] = {}
    for title, cell in sectioned_cells(cells):
        code = out.setdefault(title, [])
        if cell["cell_type"] == "code":
            code.append(cell_source(cell))
    return [(title, code) for title, code in out.items() if code]


class Tee:
    """A text stream that writes to several (the terminal, the log, the section's captured output)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def headless_shell():
    """The IPython shell of this process (one, as a Jupyter kernel holds one), its namespace emptied: magics
    (`%matplotlib inline`), display and the display hook work; tracebacks are plain text (they go into the log)."""
    from IPython.core.interactiveshell import InteractiveShell

    class HeadlessShell(InteractiveShell):
        def enable_gui(self, gui=None):
            """The inline backend needs no GUI event loop (ipykernel's shell does the same for it)."""

    # One shell per process: the first call makes it, later calls reuse it.
    shell = InteractiveShell.instance() if InteractiveShell.initialized() else HeadlessShell.instance()
    shell.reset(new_session=False)
    shell.run_line_magic("colors", "nocolor")
    return shell


def run_sections(parts: list[tuple[str, list[str]]], log, on_section=None, cuda: bool = False):
    """Run every code cell in one IPython shell, section by section. Returns (shell, [per-section records]).
    Each record: section, seconds, cells, error (or None), output (text), peak_gpu_mib (CUDA). Stops at the first
    failing cell, as Run All does. on_section(records) is called after each section (to save the record)."""
    import torch
    shell = headless_shell()
    records = []
    for title, sources in parts:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        captured = io.StringIO()
        error, start = None, time.perf_counter()
        log.write(f"\n===== {title} =====\n")
        with contextlib.redirect_stdout(Tee(sys.stdout, log, captured)), \
                contextlib.redirect_stderr(Tee(sys.stderr, log, captured)):
            for n, source in enumerate(sources):
                result = shell.run_cell(source, store_history=False)
                if not result.success:
                    failure = result.error_in_exec or result.error_before_exec
                    error = f"cell {n + 1} of the section: {type(failure).__name__}: {failure}"
                    break
        records.append({"section": title, "seconds": round(time.perf_counter() - start, 2), "cells": len(sources),
                        "error": error, "output": captured.getvalue()})
        if cuda:
            records[-1]["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        log.flush()
        if on_section:
            on_section(records)
        if error:
            break
    return shell, records


def save_with_outputs(cells: list[dict], records: list[dict], path: Path) -> None:
    """The notebook at `path` as a student saves it: the code cells of every section that ran carry an execution
    count, the first of each its section's printed output (records); the others are as handed out. Section 7
    hands in this file."""
    printed = {r["section"]: r["output"] for r in records}
    saved, shown = [], set()
    for title, cell in sectioned_cells(cells):
        cell = dict(cell)
        if cell["cell_type"] == "code":
            first = title in printed and title not in shown
            shown.add(title)
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": printed[title] or "\n"}] \
                if first else []
            cell["execution_count"] = 1 if title in printed else None
        saved.append(cell)
    notebook = read_notebook(NOTEBOOK)
    notebook["cells"] = saved
    path.write_text(json.dumps(notebook, indent=1))


def summary(shell, records: list[dict]) -> dict:
    """What the notebook's variables and printed output say: the memory fit, settings, training, accuracies."""
    ns = shell.user_ns if shell is not None else {}
    lines = (line for r in records for line in r["output"].splitlines())
    out: dict = {"memory_fit": next((line for line in lines if line.startswith("GPU memory:")), None)}
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


def write_record(path: Path, plan: Plan, device, records: list[dict], extra: dict) -> None:
    peaks = [r["peak_gpu_mib"] for r in records if "peak_gpu_mib" in r]
    common.write_results(path, {
        "benchmark": "notebook_gpu",
        "what": "CS461_Assignment1.ipynb run headless in one IPython shell, first cell through Section 7 "
                "(its hand-in: eval.py --fast on CUDA), saved after every section, with the settings below",
        **provenance(device), "profile": plan.profile, "budget_min": plan.budget_min, "data_dir": str(plan.data_dir),
        "environment": plan.env, "sections": [{k: v for k, v in r.items() if k != "output"} for r in records],
        "notebook_seconds": round(sum(r["seconds"] for r in records), 1),
        "peak_gpu_mib": max(peaks) if peaks else None, **extra})


def describe_gpu(device) -> dict:
    """The GPU's name, size and free memory when the run starts (other processes may hold some)."""
    if device.type != "cuda":
        return {"gpu": None}
    import torch
    free, total = torch.cuda.mem_get_info(device)
    return {"gpu": torch.cuda.get_device_name(device), "gpu_total_mib": round(total / 2**20),
            "gpu_free_mib_at_start": round(free / 2**20)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--pack", type=Path, nargs="+", help="tiny64 pack(s) to decode into the data folder")
    data.add_argument("--data-dir", type=Path, help="a course-format data folder to use as it is")
    parser.add_argument("--budget-min", type=float, default=2.0, help="training budget, minutes (default 2)")
    parser.add_argument("--profile", choices=("full", "short"), default="full",
                        help="the notebook's profile (default full; short only to try the runner on a CPU)")
    parser.add_argument("--work", default="/tmp/notebook_gpu", help="scratch folder (default %(default)s)")
    common.add_out_argument(parser)
    parser.add_argument("--tag", default="", help="added to the record's file name")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit: runs nothing")
    args = parser.parse_args(argv)
    if args.budget_min <= 0:
        parser.error(f"--budget-min must be > 0, got {args.budget_min}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    cells = notebook_cells()
    parts = sections(cells)
    print(f"profile {plan.profile}, training budget {plan.budget_min:g} min")
    print(f"data: {plan.data_dir}" + (f" (decoded by: {' '.join(plan.unpack)})" if plan.unpack else " (as it is)"))
    print("environment:\n" + "\n".join(f"  {k}={v}" for k, v in plan.env.items()))
    print(f"record and log: {plan.out}/")
    print("sections: " + ", ".join(f"{title} ({len(code)} cells)" for title, code in parts))
    if args.dry_run:
        return 0
    device = pick_device("auto")
    if plan.profile == "full" and device.type != "cuda":
        raise SystemExit("the full profile needs a CUDA GPU and none is visible here; run with --dry-run to see "
                         "the plan, or --profile short to try the runner on the CPU")
    plan.work.mkdir(parents=True, exist_ok=True)
    tag = "-".join(p for p in (plan.profile, f"{plan.budget_min:g}min", args.tag) if p)
    record_path = common.results_path(plan.out, "notebook_gpu", device, tag)
    extra = describe_gpu(device)
    if plan.unpack:
        start = time.perf_counter()
        subprocess.run(plan.unpack, check=True)
        extra["unpack_seconds"] = round(time.perf_counter() - start, 1)
    notebook_path = Path(plan.env["CS461_NOTEBOOK_PATH"])     # what Section 7 hands in: saved after every section
    save_with_outputs(cells, [], notebook_path)
    os.environ.update(plan.env)
    os.chdir(common.ROOT)                               # the notebook imports models and utils from here

    def save(records):
        write_record(record_path, plan, device, records, extra)
        save_with_outputs(cells, records, notebook_path)

    plan.out.mkdir(parents=True, exist_ok=True)
    with open(plan.out / "notebook_gpu.log", "w") as log:
        shell, records = run_sections(parts, log, on_section=save, cuda=device.type == "cuda")
    extra.update(summary(shell, records))
    save(records)
    print(f"\nwrote {record_path}")
    for r in records:
        peak = f"{r['peak_gpu_mib']:9,.0f} MiB peak" if "peak_gpu_mib" in r else ""
        failed = f"  FAILED: {r['error']}" if r["error"] else ""
        print(f"  {r['section'][:45]:45s} {r['seconds']:7.1f} s {peak}{failed}")
    if extra.get("memory_fit"):
        print(f"  {extra['memory_fit']}")
    handed = extra.get("eval") or {}
    print(f"  Section 7: {handed.get('summary')} eval.py's accuracies {handed.get('accuracies_percent')}")
    return 1 if any(r["error"] for r in records) or not handed.get("ok") else 0


if __name__ == "__main__":
    sys.exit(main())
