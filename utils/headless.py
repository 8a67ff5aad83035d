"""Run CS461_Assignment1.ipynb headless: a fresh python3 kernel in the project root, an identity filled in so
that Section 7 can hand in. Used by `make demo` (tools/demo.py), `make hub` (tools/hub.py) and the hub-kernel test.

Two things a headless run does differently from a Jupyter front-end, both on purpose:

- Every cell has a time limit (CELL_TIMEOUT_S, or $CS461_CELL_TIMEOUT): a cell that runs longer stops the run
  with a CellTimeout naming the cell (its number and first line), instead of waiting without end.
- Output widgets (the neighbour explorer draws its figure into an ipywidgets.Output) are recorded but never
  synced back to the kernel. nbclient mimics a front-end's Output widget by sending the kernel a comm message on
  the shell channel while it waits on that same channel for the cell's execute_reply; with pyzmq's asyncio
  sockets that send can swallow the wake-up for the reply, so the client waits for the whole cell timeout (for
  ever without one) after the kernel went idle. Nothing headless needs the kernel to know what the Output
  shows, so the sync is left out.

As a command, the notebook in the short profile as `make demo` and `make hub` run it (the kernel is this
interpreter's, so `.venv-hub-2025/bin/python -m utils.headless ...` runs it under that environment's packages):

    python -m utils.headless --output OUT [--env CS461_DEMO=1] [--static-widgets] [--cell-timeout S] [--json FILE]
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError
from nbclient.output_widget import OutputWidget

from utils import notebook_file
from utils.notebook_file import NOTEBOOK

ROOT = NOTEBOOK.parent
DEMO_IDENTITY = 'SCIPER = 100000  # demo identity filled in by `make demo`\nLAST_NAME = "Student"\nFIRST_NAME = "Demo"\n'
# Longest a single cell may run headless. The slowest cell, training in the short profile, takes about 100 s on
# an idle 2-core CPU and took 922 s on a loaded one (benchmarks/results/hub-2025-*.json); a GPU profile's training
# cell can take longer: raise it there ($CS461_CELL_TIMEOUT).
CELL_TIMEOUT_S = 2400
CELL_TIMEOUT_ENV = "CS461_CELL_TIMEOUT"


class CellTimeout(CellTimeoutError):
    """A cell ran longer than its time limit; the message names the cell."""


def cell_name(nb, index: int) -> str:
    """'cell 37 ("explorer.neighbour_explorer(val_split.images, ...")': the cell's number and first line."""
    lines = nb.cells[index].source.strip().splitlines()
    first = lines[0] if lines else ""
    return f'cell {index} ("{first[:80]}{"..." if len(first) > 80 else ""}")'


def cell_timeout(default: int = CELL_TIMEOUT_S) -> int:
    """$CS461_CELL_TIMEOUT in seconds when set, else `default`."""
    value = os.environ.get(CELL_TIMEOUT_ENV)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{CELL_TIMEOUT_ENV}={value!r}: expected a whole number of seconds, e.g. 1800") from None


def fill_identity(nb) -> None:
    """Section 0's identity cell of `nb` (an nbformat notebook) set to the demo identity."""
    notebook_file.fill_identity(nb.cells, DEMO_IDENTITY)


class _RecordedOutputWidget(OutputWidget):
    """nbclient's Output-widget mimic without the sync to the kernel (see the module's docstring)."""

    def sync_state(self) -> None:
        pass


def execute_notebook(nb, env: dict | None = None, timeout: int | None = None,
                     save_to: str | Path | None = None, waited: dict[int, float] | None = None) -> dict[int, float]:
    """Execute `nb` in place, headless, in a fresh python3 kernel whose working directory is the project root.
    env: the kernel's environment variables (default: this process's). timeout: each cell's time limit in seconds
    (default: cell_timeout()). save_to: write the notebook there after every cell, as a student saves before
    Section 7 (which hands in the notebook as saved on disk). Raises nbclient's CellExecutionError at the first
    cell that fails, CellTimeout at the first cell that runs past its limit; the cells run until then keep their
    outputs. Returns `waited` (a new dict by default), filled in as the cells run: {cell index: seconds this
    process waited for the cell} (the kernel's own timing in the cells' metadata does not show a client that
    waited after the kernel was done)."""
    import nbformat

    timeout = cell_timeout() if timeout is None else timeout
    running = {"index": 0, "start": time.monotonic()}
    waited = {} if waited is None else waited

    def started(cell_index, **_):
        running.update(index=cell_index, start=time.monotonic())

    def executed(cell_index, **_):
        waited[cell_index] = round(time.monotonic() - running["start"], 2)
        if save_to:
            nbformat.write(nb, save_to)

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}},
                            on_cell_start=started, on_cell_executed=executed)
    client.widget_registry["@jupyter-widgets/output"]["OutputModel"] = _RecordedOutputWidget
    try:
        client.execute(**({} if env is None else {"env": env}))   # env=None would reach the kernel launcher as None
    except CellTimeoutError as error:
        raise CellTimeout(f"{cell_name(nb, running['index'])} ran longer than its limit of {timeout} s and was "
                          f"stopped. If it is slow rather than stuck, raise the limit: {CELL_TIMEOUT_ENV}=<seconds>."
                          ) from error
    return waited


def run_short_profile(output: Path, *, static_widgets: bool = False, timeout: int | None = None,
                      env: dict[str, str] | None = None) -> dict:
    """The notebook in the short profile with the demo identity, headless, saved after every cell into `output`
    (the executed notebook, figures, weights, and what Section 7 handed in under output/submission), with the
    environment variables make demo uses for the output folders; `env` adds to them (make hub passes
    CS461_DEMO=1, as make demo sets it: Section 7 then passes eval.py --demo). static_widgets: the explorer draws a static figure
    (as under nbval) instead of its widget. Returns {"ok", "error", "seconds", "notebook", "cells"}; cells: the
    code cells that ran, [{"index", "name", "seconds"}], with the seconds each took."""
    import nbformat

    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    executed = output / NOTEBOOK.name
    env = {**os.environ, "CS461_PROFILE": os.environ.get("CS461_PROFILE", "short"), "CS461_OUTPUT_DIR": str(output),
           "CS461_SUBMISSION_DIR": str(output / "submission"), "CS461_NOTEBOOK_PATH": str(executed), **(env or {})}
    env.pop("CS461_STATIC_WIDGETS", None)
    if static_widgets:
        env["CS461_STATIC_WIDGETS"] = "1"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    fill_identity(nb)
    nbformat.write(nb, executed)          # the copy Section 7 hands in
    start, error, waited = time.time(), None, {}
    try:
        execute_notebook(nb, env=env, timeout=timeout, save_to=executed, waited=waited)
    except Exception as failure:          # noqa: BLE001 - recorded and returned: the caller decides
        error = f"{type(failure).__name__}: {str(failure).strip()[-3000:]}"
    finally:
        nbformat.write(nb, executed)      # keep what ran, also when a cell failed
    cells = [{"index": i, "name": cell_name(nb, i), "seconds": seconds} for i, seconds in waited.items()]
    return {"ok": error is None, "error": error, "seconds": round(time.time() - start, 1), "notebook": str(executed),
            "cells": cells}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Run CS461_Assignment1.ipynb headless in the short profile, "
                                     "saved after every cell, Section 0 filled in with the demo identity.")
    parser.add_argument("--output", type=Path, required=True, help="folder for the executed notebook and outputs")
    parser.add_argument("--static-widgets", action="store_true", help="the explorer draws a static figure")
    parser.add_argument("--cell-timeout", type=int, default=None,
                        help=f"each cell's time limit in seconds (default: ${CELL_TIMEOUT_ENV} or {CELL_TIMEOUT_S})")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the kernel, e.g. CS461_DEMO=1 (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="write the run's result (ok, error, times) here")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.env):
        parser.error(f"--env expects NAME=VALUE, found {[item for item in args.env if '=' not in item]}")
    env = dict(item.split("=", 1) for item in args.env)
    result = run_short_profile(args.output, static_widgets=args.static_widgets, timeout=args.cell_timeout, env=env)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"notebook {'executed' if result['ok'] else 'FAILED'} in {result['seconds']:.0f} s -> {result['notebook']}")
    if result["error"]:
        print(result["error"])
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
