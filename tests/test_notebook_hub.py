"""The notebook as on the course hub, in a kernel that lacks every optional package: umap-learn, seaborn,
ipywidgets and tqdm cannot be imported there. Run All must still reach Section 7 and hand in the submission,
and each missing package must be announced (the first cell's table, then a note where the kit does without).

The kernel gets a `sitecustomize.py` (found through PYTHONPATH, imported at interpreter start) that makes those
imports fail as if the packages were not installed; eval.py, which Section 7 runs in a subprocess, inherits
it too. Short CPU profile as under nbval, trained for 6 s only ($CS461_TIME_BUDGET_MIN): what is tested here is
that every section runs without those packages, not what the encoder learns (nbval's run checks that).
"""
import json
import os
import re
from datetime import datetime

import nbformat

from utils.headless import NOTEBOOK, execute_notebook, fill_identity
from utils.environment import PACKAGES
from utils.submission.grader import run_course_grader

BLOCKED = {p.module: p.dist for p in PACKAGES if not p.required}   # umap, seaborn, ipywidgets, tqdm
# None in sys.modules is how Python marks a module as absent: `import tqdm` raises ModuleNotFoundError and
# importlib.util.find_spec("tqdm") returns None, exactly as when the package is not installed (torch probes
# optional modules with find_spec at import time, so a finder that raised instead would break torch itself).
SITECUSTOMIZE = '''"""Test-only: make the optional packages unimportable, as in a course hub kernel that lacks them."""
import sys

for name in {blocked!r}:
    sys.modules[name] = None
'''


def cell_text(cell) -> str:
    """Everything a code cell printed (streams and text/plain results)."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) -
            datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def test_notebook_runs_to_section_7_without_optional_packages(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=sorted(BLOCKED)))
    out = tmp_path / "out"
    out.mkdir()
    executed = out / NOTEBOOK.name
    nb = nbformat.read(NOTEBOOK, as_version=4)
    fill_identity(nb)                    # Section 7 hands in only a notebook with an identity
    nbformat.write(nb, executed)         # the copy Section 7 hands in
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "CS461_PROFILE": "short", "CS461_TIME_BUDGET_MIN": "0.1", "CS461_OUTPUT_DIR": str(out),
           "CS461_SUBMISSION_DIR": str(out / "submission"), "CS461_NOTEBOOK_PATH": str(executed),
           "CS461_DEMO": "1"}        # trained on the generated data: Section 7 passes eval.py --demo
    env.pop("CS461_STATIC_WIDGETS", None)   # the explorer must find out by itself that ipywidgets is missing
    try:
        # saved after every cell, as a student saves before Section 7; raises at the first cell that fails
        execute_notebook(nb, env=env, timeout=1800, save_to=executed)
    finally:
        slowest = sorted(((cell_seconds(c), c.source.splitlines()[0]) for c in nb.cells if c.cell_type == "code"),
                         reverse=True)[:5]
        print("slowest cells:", [(round(s, 1), line[:60]) for s, line in slowest])

    code = [c for c in nb.cells if c.cell_type == "code"]
    everything = "\n".join(cell_text(c) for c in code)

    # The first cell lists each optional package as missing, says the notebook can go on, gives the command.
    table = cell_text(code[0])
    for dist in BLOCKED.values():
        assert re.search(rf"^  {re.escape(dist)} +MISSING, can go on: .* Install: %pip install --user "
                         rf"{re.escape(dist)}==\S+$", table, flags=re.MULTILINE), table
    # Each one is announced again where the kit does without it.
    for dist in BLOCKED.values():
        assert f"note: {dist} cannot be imported" in everything, dist
    embeddings = next(c for c in code if "plot_embeddings_side_by_side" in c.source)
    assert "the embeddings figure shows t-SNE only" in cell_text(embeddings)

    # Section 7 ran: every cell after its heading executed, the submission (the saved notebook, the report
    # drafted from this run) was assembled and eval.py passed.
    heading = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                   and c.source.startswith("# 7. Submission Instructions"))
    section_7 = [c for c in nb.cells[heading:] if c.cell_type == "code"]
    assert section_7 and all(c.execution_count for c in section_7)
    assert not any(o.output_type == "error" for c in section_7 for o in c.outputs)
    verdict = cell_text(section_7[-1])
    assert "NOT COPIED" not in verdict and re.search(r"eval\.py: All \d+ checks passed", verdict), verdict
    assert len(verdict.splitlines()) < 15, verdict       # the verdict, not eval.py's whole log
    assert "PASS notebook executed" in (out / "eval_log.txt").read_text()
    assert (out / "submission" / "report.md").read_text() == (out / "my_report.md").read_text()
    assert {"CS461_Assignment1.ipynb", "final_model.safetensors", "models.py", "report.md"} <= {
        p.name for p in (out / "submission").iterdir()}

    # The course grader's own sequence (the replica, a clean `python -I`) on what Section 7 handed in, on the same
    # data: it imports, loads and probes the short-profile model, and prints Section 7's eval.py ID numbers.
    verdict_json = json.loads((out / "eval_result.json").read_text())
    grader = run_course_grader(out / "submission", data_dir=verdict_json["data_dir"])
    assert grader.ok, grader.stdout + grader.stderr
    for key, line in (("id_knn", "k-NN Accuracy"), ("id_linear", "Linear Probe Accuracy")):
        ours = verdict_json["accuracies_percent"][key]
        assert f"{grader.accuracies[key] * 100:.2f}" == f"{ours:.2f}", (key, grader.accuracies, ours)
        assert f"{line}: {ours / 100:.2f}%" in grader.stdout, grader.stdout
