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

from utils.headless import NOTEBOOK, fill_identity
from utils.environment import PACKAGES
from utils.submission.grader import accuracy_differences, run_course_grader

from test_notebook import assert_sections_write_out_the_algorithm

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
    """Run All in a kernel without the optional packages, as the README's quick start says: Section 0 filled in
    and saved, Run All (Jupyter never saved meanwhile, so Section 7 refuses during it and copies nothing), save,
    then Section 7 again: it hands in, and the handed-in notebook ends on that hand-in's own verdict."""
    from nbclient import NotebookClient
    from utils.headless import ROOT

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=sorted(BLOCKED)))
    out = tmp_path / "out"
    out.mkdir()
    executed = out / NOTEBOOK.name
    nb = nbformat.read(NOTEBOOK, as_version=4)
    fill_identity(nb)                    # Section 7 hands in only a notebook with an identity
    nbformat.write(nb, executed)         # Section 0 filled in and saved, before Run All
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "CS461_PROFILE": "short", "CS461_TIME_BUDGET_MIN": "0.1", "CS461_OUTPUT_DIR": str(out),
           "CS461_SUBMISSION_DIR": str(out / "submission"), "CS461_NOTEBOOK_PATH": str(executed),
           "CS461_DEMO": "1"}        # trained on the generated data: Section 7 passes eval.py --demo
    env.pop("CS461_STATIC_WIDGETS", None)   # the explorer must find out by itself that ipywidgets is missing
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    section_7 = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    try:
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):        # Run All
                client.execute_cell(cell, index)
            refusal = cell_text(nb.cells[section_7])
            nbformat.write(nb, executed)                   # Ctrl+S
            client.execute_cell(nb.cells[section_7], section_7)
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

    # What the run printed: the data, the network, the run and its id, a probe line, the speed and budget plan.
    for line in ("train   3,000 images,  20 classes", "ImageEncoder('tiny'): 1.02 M parameters, get_features -> (2, 1000)",
                 "Training set: the kit's generated data", "New run ", "Speed after ", "Exported "):
        assert line in everything, line
    run_id = json.loads((out / "training_metrics.json").read_text())["fingerprint"]
    assert f"run id {run_id}" in everything and re.search(r"epoch +\d+ \| val loss [\d.]+ \| ID k-NN", everything)

    # Section 7 refused during Run All (the file on disk was saved before it), copying nothing; after the save it
    # handed in, and the handed-in notebook ends on that verdict.
    assert refusal.startswith("NOT COPIED") and "never ran" in refusal, refusal
    verdict = cell_text(nb.cells[section_7])
    assert "NOT COPIED" not in verdict and re.search(r"eval\.py: All \d+ checks passed", verdict), verdict
    assert len(verdict.splitlines()) < 15, verdict       # the verdict, not eval.py's whole log
    handed_in = nbformat.read(out / "submission" / NOTEBOOK.name, as_version=4)
    assert cell_text([c for c in handed_in.cells if c.cell_type == "code"][-1]) == verdict
    assert_sections_write_out_the_algorithm(handed_in)
    assert "PASS notebook executed" in (out / "eval_log.txt").read_text()
    assert (out / "submission" / "report.md").read_text() == (out / "my_report.md").read_text()
    assert {"CS461_Assignment1.ipynb", "final_model.safetensors", "models.py", "report.md"} <= {
        p.name for p in (out / "submission").iterdir()}

    # The course grader's own sequence (the replica, a clean `python -I`) on what Section 7 handed in, on the same
    # data: it imports, loads and probes the short-profile model, and prints Section 7's eval.py ID numbers.
    verdict_json = json.loads((out / "eval_result.json").read_text())
    grader = run_course_grader(out / "submission", data_dir=verdict_json["data_dir"])
    assert grader.ok, grader.stdout + grader.stderr
    ours = {key: verdict_json["accuracies_percent"][key] for key in ("id_knn", "id_linear")}
    assert not accuracy_differences(grader.accuracies, ours), (grader.accuracies, ours)
    for key, line in (("id_knn", "k-NN Accuracy"), ("id_linear", "Linear Probe Accuracy")):
        assert f"{line}: {ours[key] / 100:.2f}%" in grader.stdout, grader.stdout
