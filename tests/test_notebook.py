"""The committed notebook: built from tools/build_notebook.py, the course's sections in order, small to diff.

nbval executes it separately (pytest.ini lists CS461_Assignment1.ipynb in testpaths); these tests check its
shape without running it.
"""
import importlib.util
import json
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "CS461_Assignment1.ipynb"
SECTIONS = ["# 0. SCIPER Number and Name", "# 1. Datasets & Utilities", "# 2. Load Your Model",
            "# 3. Helpers for Training & Evaluation", "# 4. Optimizer Configuration", "# 5. Training Loop",
            "# 6. Visualize Results", "# 7. Submission Instructions"]


def load_builder():
    spec = importlib.util.spec_from_file_location("build_notebook", ROOT / "tools" / "build_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_committed_notebook_matches_its_builder():
    built, nb = load_builder().build(), committed()
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in built.cells], \
        "CS461_Assignment1.ipynb differs from tools/build_notebook.py: run `.venv/bin/python tools/build_notebook.py --execute`"


def test_sections_follow_the_course_in_order():
    headings = [c.source.splitlines()[0] for c in committed().cells if c.cell_type == "markdown"]
    positions = [next(i for i, h in enumerate(headings) if h.startswith(s)) for s in SECTIONS]
    assert positions == sorted(positions), headings


def test_identity_cell_is_tagged_and_a_placeholder():
    cells = [c for c in committed().cells if "identity" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    source = cells[0].source
    assert "SCIPER" in source and "LAST_NAME" in source and "FIRST_NAME" in source


def test_only_checked_cells_keep_outputs_and_they_are_small():
    nb = committed()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs:
            assert cell.source.startswith("# NBVAL_CHECK_OUTPUT"), cell.source[:80]
            assert all(o["output_type"] == "stream" for o in cell.outputs)
            # nbval fails a cell that has outputs but no execution count ("unrun reference cell")
            assert isinstance(cell.execution_count, int), cell.source[:80]
    assert len(json.dumps(nbformat.writes(nb))) < 200_000


def loop_of(source: str) -> str:
    """The `while not run.finished:` loop of a piece of source, as ast.dump (comments and spacing ignored)."""
    import ast
    import textwrap
    loops = [node for node in ast.walk(ast.parse(textwrap.dedent(source))) if isinstance(node, ast.While)
             and ast.unparse(node.test) == "not run.finished"]
    assert len(loops) == 1, source
    return ast.dump(loops[0])


def test_section_5_runs_the_engines_own_loop():
    """Section 5 shows the loop that trains, and it is train()'s: the same statements, so the two cannot drift."""
    import inspect
    from utils import train
    section_5 = [c.source for c in committed().cells if c.cell_type == "code" and "while not run.finished" in c.source]
    assert len(section_5) == 1
    assert "start_run(cfg, data, objective=custom_loss_function, step=training_step)" in section_5[0]
    assert "result = run.finish()" in section_5[0]
    assert loop_of(section_5[0]) == loop_of(inspect.getsource(train.train))
