"""The committed notebook: built from tools/build_notebook.py, the course's sections in order, no outputs, small to
diff; Sections 3 to 5 write out the algorithm, and the functions they define are the ones the run calls.

nbval executes the whole notebook separately (pytest.ini lists CS461_Assignment1.ipynb in testpaths), and
tests/test_notebook_hub.py executes it in a kernel without the optional packages, through Section 7. Here its
cells up to Section 5 run in this process, with a short deterministic run, to show that editing a function of
Sections 3 and 4 changes the run.
"""
import ast
import importlib.util
import inspect
import json
import linecache
import re
import textwrap
from pathlib import Path

import matplotlib
import nbformat
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "CS461_Assignment1.ipynb"
SECTIONS = ["# 0. SCIPER Number and Name", "# 1. Datasets & Utilities", "# 2. Load Your Model",
            "# 3. Helpers for Training & Evaluation", "# 4. Optimizer Configuration", "# 5. Training Loop",
            "# 6. Visualize Results", "# 7. Submission Instructions"]
# What Sections 3 to 5 must define: the course's helpers, the optimizer and its schedule.
ALGORITHM = {"custom_loss_function": 3, "training_step": 3, "evaluation_step": 3, "learning_rate": 4}


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
        "CS461_Assignment1.ipynb differs from tools/build_notebook.py: run `.venv/bin/python tools/build_notebook.py`"


def test_sections_follow_the_course_in_order():
    headings = [c.source.splitlines()[0] for c in committed().cells if c.cell_type == "markdown"]
    positions = [next(i for i, h in enumerate(headings) if h.startswith(s)) for s in SECTIONS]
    assert positions == sorted(positions), headings


def test_identity_cell_is_tagged_and_a_placeholder():
    cells = [c for c in committed().cells if "identity" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    source = cells[0].source
    assert "SCIPER = None" in source and 'LAST_NAME = "<LAST_NAME>"' in source and "FIRST_NAME" in source


def test_the_committed_notebook_has_no_outputs_and_is_small():
    """A student opens it as theirs: nothing another run printed."""
    nb = committed()
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert len(json.dumps(nbformat.writes(nb))) < 200_000


def code_by_section(nb) -> dict[int, list[str]]:
    """{section number: the sources of its code cells}."""
    sections, current = {}, None
    for cell in nb.cells:
        match = re.match(r"# (\d)\. ", cell.source) if cell.cell_type == "markdown" else None
        if match:
            current = int(match.group(1))
        elif cell.cell_type == "code" and current is not None:
            sections.setdefault(current, []).append(cell.source)
    return sections


def defined_in(sources: list[str]) -> set[str]:
    """Names a list of cells defines with `def`, or assigns at the top level."""
    names = set()
    for source in sources:
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def assert_sections_write_out_the_algorithm(nb) -> None:
    """Sections 3 and 4 define the loss, the step, the evaluation, the optimizer and its schedule (functions
    written in the cells, not names imported from the kit); Section 5's loop calls them."""
    sections = code_by_section(nb)
    for name, section in ALGORITHM.items():
        assert name in defined_in(sections[section]), (name, section)
    assert "optimizer" in defined_in(sections[4])
    loss = next(s for s in sections[3] if "def custom_loss_function" in s)
    assert "logsumexp" in loss and "cfg.temperature" in loss          # NT-Xent itself, not a call into utils
    loop = next(s for s in sections[5] if "while not run.finished" in s)
    calls = {node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
             for node in ast.walk(ast.parse(loop)) if isinstance(node, ast.Call)}
    assert {"training_step", "learning_rate", "run.evaluate", "run.save", "run.finish", "run.epoch_batches",
            "run.record_step"} <= calls, calls


def test_sections_3_to_5_write_out_the_algorithm():
    assert_sections_write_out_the_algorithm(committed())


def loop_of(source: str) -> str:
    """The `while not run.finished:` loop of a piece of source, as ast.dump (comments and spacing ignored)."""
    loops = [node for node in ast.walk(ast.parse(textwrap.dedent(source))) if isinstance(node, ast.While)
             and ast.unparse(node.test) == "not run.finished"]
    assert len(loops) == 1, source
    return ast.dump(loops[0])


def test_section_5_runs_the_engines_own_loop():
    """Section 5 shows the loop that trains, and train() runs the same statements: the two cannot drift."""
    from utils import train
    section_5 = [s for s in code_by_section(committed())[5] if "while not run.finished" in s]
    assert len(section_5) == 1
    assert "with start_run(cfg, data, model, optimizer, code=code) as run:" in section_5[0]
    assert "    result = run.finish(evaluation_step)" in section_5[0]
    assert loop_of(section_5[0]) == loop_of(inspect.getsource(train.train))


# ----------------------------------------------------------------------------------------------------------
# The notebook's functions are the ones the run calls: its cells up to Section 5, run here with a change
# ----------------------------------------------------------------------------------------------------------

# After the settings cell: a short run that is the same every time (epochs, not minutes).
SHORT_RUN = ("cfg.epochs, cfg.time_budget_min, cfg.max_train_images, cfg.batch_size = 1, 0, 256, 64\n"
             "cfg.eval_every = cfg.checkpoint_every = 0\ncfg.log_every = 1\n")
EDITS = {   # function: (text in its cell, the edit)
    "custom_loss_function": ("return -(log_prob.masked_fill(~is_positive, 0.0).sum(dim=1) / (V - 1)).mean()",
                             "return -(log_prob.masked_fill(~is_positive, 0.0).sum(dim=1) / (V - 1)).mean() * 2"),
    "training_step": ("views = augment.make_views(batch, view_configs, generator=generator)",
                      "views = augment.make_views(batch.flip(2), view_configs, generator=generator)"),
    "learning_rate": ("return cfg.lr * optim.lr_factor(progress, cfg.warmup, cfg.final_lr_ratio)",
                      "return 0.5 * cfg.lr * optim.lr_factor(progress, cfg.warmup, cfg.final_lr_ratio)"),
    "evaluation_step": ('return {"val_loss": val_loss, **result.accuracies()}',
                        'return {"val_loss": val_loss, **result.accuracies(), "edited": 1.0}'),
}


# Cells left out: figures of the data and the untrained reference points (they change nothing in the run).
SKIPPED = ("plots.plot_image_grid(", "random_init = evaluation_step(model)")


def run_until_section_5(tmp_path, data_dir, edit: str | None = None) -> dict:
    """Execute the notebook's code cells through Section 5's loop in a fresh namespace (IPython's magics and the
    SKIPPED cells left out), with DATA_DIR set to `data_dir` in the settings cell (as a student points it at a
    copy of the data; a small set keeps each run's evaluation short), SHORT_RUN after that cell and `edit` (a key
    of EDITS) applied. Returns the namespace."""
    cells = []
    for cell in committed().cells:
        if cell.cell_type != "code" or any(text in cell.source for text in SKIPPED):
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        source = source.replace("DATA_DIR = None ", f"DATA_DIR = {str(data_dir)!r} ")
        if edit and EDITS[edit][0] in source:
            source = source.replace(*EDITS[edit])
        cells.append(source)
        if "PROFILE = " in source:
            cells.append(SHORT_RUN + f"cfg.out_dir = {str(tmp_path / 'runs')!r}\n")
        if "while not run.finished" in source:
            break
    namespace = {}
    for index, source in enumerate(cells):
        # as IPython does: the cell's source in linecache, so that inspect.getsource finds a function's source
        filename = f"<notebook cell {index} of {tmp_path.name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        exec(compile(source, filename, "exec"), namespace)
    matplotlib.pyplot.close("all")
    assert Path(namespace["DATA_DIR"]) == Path(data_dir), namespace["DATA_DIR"]    # the settings cell took it
    return namespace


def test_editing_a_function_of_sections_3_and_4_changes_the_run(tiny_data_dir, tmp_path, monkeypatch, capsys):
    """The notebook's loss equals the kit's NT-Xent on the same inputs; editing the loss, the step or the schedule
    changes the run's id and its logged losses; editing the evaluation step changes what the run records."""
    from utils import losses
    monkeypatch.setenv("CS461_PROFILE", "short")
    monkeypatch.setenv("CS461_OUTPUT_DIR", str(tmp_path))
    matplotlib.use("Agg")
    base = run_until_section_5(tmp_path / "base", tiny_data_dir)
    z = torch.randn(6, 16, 128, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(base["custom_loss_function"](z), losses.nt_xent(z, temperature=base["cfg"].temperature),
                          atol=1e-5)
    logged = lambda ns: [r["loss"] for r in ns["result"].history["log"]]  # noqa: E731
    assert len(logged(base)) == 4 and base["run"].fingerprint in capsys.readouterr().out
    for name in ("custom_loss_function", "training_step", "learning_rate"):
        edited = run_until_section_5(tmp_path / name, tiny_data_dir, edit=name)
        assert edited["run"].fingerprint != base["run"].fingerprint, name
        assert logged(edited) != logged(base), name
    edited = run_until_section_5(tmp_path / "evaluation", tiny_data_dir, edit="evaluation_step")
    assert edited["run"].fingerprint == base["run"].fingerprint       # evaluating changes no weight
    assert edited["result"].history["eval"][-1]["edited"] == 1.0 and "edited" not in base["result"].history["eval"][-1]


def test_student_facing_text_uses_no_word_a_student_does_not_have():
    """The notebook's markdown, models.py's docstring and the README's quick start on the hub speak of the course
    and the kit only."""
    import models
    words = ("nbval", "fingerprint", "the lent", "device call", " CI ", "issue ", "H200", "scale acts as C",
             "600 s target")
    markdown = "\n".join(c.source for c in committed().cells if c.cell_type == "markdown")
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## On the course hub"):].split("\n## ", 1)[0]
    for text, where in ((markdown, "the notebook's markdown"), (models.__doc__, "models.py's docstring"),
                        (quick_start, "the README's quick start")):
        found = [w.strip() for w in words if w in text]
        assert not found, (where, found)
