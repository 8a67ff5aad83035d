"""`make demo`: run CS461_Assignment1.ipynb end to end, headless, in the short CPU profile.

Leaves in demo_output/: the executed notebook (and an HTML copy), figures/, final_model.safetensors,
training_metrics.json, submission/ (the four files) and eval_verdict.txt / eval_result.json from eval.py.

The demo fills the notebook's identity cell with an obvious demo identity (SCIPER 100000, "Demo Student")
so that the submission section can run; a real user fills in their own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "CS461_Assignment1.ipynb"
OUTPUT = ROOT / "demo_output"
DEMO_IDENTITY = 'SCIPER = 100000  # demo identity filled in by `make demo`\nLAST_NAME = "Student"\nFIRST_NAME = "Demo"\n'


def fill_identity(nb) -> None:
    """Replace the source of the cell tagged 'identity' with the demo identity."""
    cells = [c for c in nb.cells if "identity" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{NOTEBOOK}: expected exactly one cell tagged 'identity', found {len(cells)}")
    cells[0].source = DEMO_IDENTITY


def run_eval(submission: Path) -> int:
    """eval.py on the submission folder (the exact protocol); its output saved to eval_verdict.txt."""
    cmd = [sys.executable, str(ROOT / "eval.py"), "-i", str(submission), "--json", str(OUTPUT / "eval_result.json")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    (OUTPUT / "eval_verdict.txt").write_text(result.stdout + result.stderr)
    print(result.stdout + result.stderr)
    return result.returncode


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    executed = OUTPUT / NOTEBOOK.name
    submission = OUTPUT / "submission"
    os.environ.update({"CS461_PROFILE": os.environ.get("CS461_PROFILE", "short"), "CS461_STATIC_WIDGETS": "1",
                       "CS461_OUTPUT_DIR": str(OUTPUT), "CS461_NOTEBOOK_PATH": str(executed),
                       "CS461_SUBMISSION_DIR": str(submission)})
    nb = nbformat.read(NOTEBOOK, as_version=4)
    fill_identity(nb)
    nbformat.write(nb, executed)        # the copy the notebook's submission section hands in

    print(f"Executing {NOTEBOOK.name} (profile {os.environ['CS461_PROFILE']}) ...", flush=True)
    start = time.time()
    client = NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, executed)    # keep what ran, also when a cell failed
    print(f"Notebook executed in {time.time() - start:.0f} s -> {executed}")
    try:
        from nbconvert import HTMLExporter
        html, _ = HTMLExporter().from_notebook_node(nb)
        (OUTPUT / "CS461_Assignment1.html").write_text(html)
    except Exception as error:  # the HTML copy is a convenience; the executed notebook is the record
        print(f"note: no HTML copy ({type(error).__name__}: {error})")

    # The submission folder got the notebook before it ran; hand in the executed one and check again.
    submission.mkdir(exist_ok=True)
    (submission / NOTEBOOK.name).write_bytes(executed.read_bytes())
    code = run_eval(submission)
    print(f"Demo outputs in {OUTPUT}/ (eval.py exit status {code}).")
    return code


if __name__ == "__main__":
    sys.exit(main())
