"""The notebook's Section 7 (utils/submission/handin.py) on a real, tiny run: it hands in only the saved,
executed notebook of the run, drafts the report from the run's own numbers, never overwrites the student's
report, prints a short verdict, and the handed-in notebook ends on that verdict whenever the notebook was saved."""
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from safetensors.torch import save_file

from utils.checkpoint import read_weights
from utils.headless import NOTEBOOK, fill_identity
from utils.submission.course import COURSE_BASELINES, DRAFT_PLACES, FILL_IN_MARKER
from utils.submission.handin import DRAFT, DRAFT_MAX_WORDS, MY_REPORT, drafted_for, hand_in
from utils.train import TrainConfig, train

from test_eval import COURSE_RECORD, SINGLE_THREAD_ENV, notebook_text, write_tiny_data

TRAINED = "weights trained on the course's data"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch of the tiny network on tiny generated data, exported as Section 5 does."""
    root = tmp_path_factory.mktemp("run")
    data_dir = write_tiny_data(root / "data")
    cfg = TrainConfig(arch="tiny", local_views=0, epochs=1, batch_size=32, eval_every=0, eval_linear_iters=20,
                      data_dir=str(data_dir), out_dir=str(root / "runs"), export_path=str(root / "final_model.safetensors"),
                      progress=False, seed=0)
    result = train(cfg)
    shutil.copy(result.metrics_path, root / "training_metrics.json")
    fingerprint = json.loads(result.metrics_path.read_text())["fingerprint"]
    return {"root": root, "data_dir": data_dir, "weights": result.weights_path, "fingerprint": fingerprint}


@pytest.fixture(autouse=True)
def single_threaded_eval(monkeypatch):
    for key, value in SINGLE_THREAD_ENV.items():
        monkeypatch.setenv(key, value)


def call(run, out: Path, notebook: Path, **kwargs):
    out.mkdir(exist_ok=True)
    return hand_in(out / "submission", weights=run["weights"], metrics=run["root"] / "training_metrics.json",
                   notebook=notebook, output_dir=out, data_dir=run["data_dir"], **kwargs)


def saved_notebook(path: Path, fingerprint: str, *, ran_until: int | None = None, section_7_output: str = "") -> Path:
    """The kit's notebook with an identity, saved as Jupyter would: code cells up to index `ran_until` (all when
    None) executed, Section 5 printing the run's id; Section 7's cell holding `section_7_output` when given."""
    from nbformat.v4 import new_output
    nb = nbformat.read(NOTEBOOK, as_version=4)
    fill_identity(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or (ran_until is not None and index > ran_until):
            continue
        cell.execution_count = index
        text = f"Exported ... run id {fingerprint}.\n" if "while not run.finished" in cell.source else "ok\n"
        if "hand_in(" in cell.source:
            text = section_7_output
        cell.outputs = [new_output("stream", name="stdout", text=text)] if text else []
    nbformat.write(nb, path)
    return path


def test_the_unsaved_notebook_is_refused_and_nothing_is_copied(run, tmp_path, capsys):
    nb = nbformat.read(NOTEBOOK, as_version=4)      # as handed out: Sections 5 and 6 hold no outputs
    fill_identity(nb)
    nbformat.write(nb, tmp_path / "saved.ipynb")
    handed = call(run, tmp_path / "out", tmp_path / "saved.ipynb")
    assert not handed.copied and not (tmp_path / "out" / "submission").exists()
    printed = capsys.readouterr().out
    assert printed.startswith("NOT COPIED") and "Section 5 (training" in printed and "Ctrl+S" in printed

    (tmp_path / "other.ipynb").write_text(notebook_text(run_output="run id 0000ffff"))
    handed = call(run, tmp_path / "out", tmp_path / "other.ipynb")
    assert not handed.copied and run["fingerprint"] in handed.lines[0]

    (tmp_path / "anonymous.ipynb").write_text(notebook_text(sciper="None", run_output=f"run id {run['fingerprint']}"))
    handed = call(run, tmp_path / "out", tmp_path / "anonymous.ipynb")
    assert not handed.copied and "SCIPER is None" in handed.lines[0] and "Nothing was copied" in handed.lines[0]
    assert not (tmp_path / "out" / "submission").exists()


def numbers(text: str) -> list[str]:
    """The numbers of a text, code spans (the run's name, file names) left out."""
    return re.findall(r"\d+(?:\.\d+)?", re.sub(r"`[^`]*`", " ", text))


def ends_on_its_verdict(out: Path, notebook: Path, handed) -> None:
    """The handed-in notebook's last cell is Section 7's, and its only output is the verdict this hand-in printed."""
    copy = nbformat.read(out / "submission" / notebook.name, as_version=4)
    last = [c for c in copy.cells if c.cell_type == "code"][-1]
    assert "hand_in(" in last.source and [o.text for o in last.outputs] == ["\n".join(handed.lines) + "\n"]


def test_hand_in_drafts_the_report_from_the_run_and_keeps_the_students(run, tmp_path):
    """The README's order: Run All (Section 7 refused, the notebook on disk being older), save, Section 7 again.
    Every hand-in's copy of the notebook ends on its own verdict, whatever the saved file's Section 7 held; the
    student's own file stays as saved."""
    notebook = saved_notebook(tmp_path / "CS461_Assignment1.ipynb", run["fingerprint"],
                              section_7_output="NOT COPIED: the notebook saved at ... holds code cells that never ran\n")
    saved = notebook.read_text()
    out = tmp_path / "out"
    handed = call(run, out, notebook, demo=True)      # trained on generated data: accepted as a demo only
    assert handed.copied and handed.ok, "\n".join(handed.lines)
    ends_on_its_verdict(out, notebook, handed)
    # The draft: within its words, every number from the run (metrics, eval.py) or the course's baselines.
    mine = out / MY_REPORT
    text = mine.read_text()
    assert len(text.split()) <= DRAFT_MAX_WORDS and text.count(FILL_IN_MARKER) == DRAFT_PLACES
    assert drafted_for(mine) == run["fingerprint"]
    metrics = json.loads((run["root"] / "training_metrics.json").read_text())
    accuracies = handed.result["accuracies_percent"]
    config = metrics["config"]
    allowed = {f"{v:.2f}" for v in accuracies.values()} | {f"{v:g}" for v in COURSE_BASELINES.values()} | {
        str(metrics["data"]["n_train"]), str(metrics["epochs"]), str(metrics["steps"]),
        f"{metrics['train_minutes']:.1f}", str(config["batch_size"]), f"{config['lr']:g}",
        str(config["global_views"]),
        "64", "5", "80"}                         # the course's image size, k and OOD fitting share
    assert set(numbers(text)) <= allowed, set(numbers(text)) - allowed
    for value in accuracies.values():
        assert f"{value:.2f}%" in text

    # Handed in as report.md and checked again here: the untouched draft is a warning in a demo (a failure
    # otherwise), all in one run of eval.py.
    assert (out / "submission" / "report.md").read_text() == text
    warned = {c["name"] for c in handed.final["checks"] if c["status"] == "warn"}
    assert {"report.md is yours", TRAINED, "network size"} <= warned
    assert json.loads((out / "eval_final.json").read_text()) == handed.final
    verdict = "\n".join(handed.lines)
    assert re.search(r"eval\.py: All \d+ checks passed", verdict)
    assert "WARN report.md is yours" in verdict and f"{accuracies['ood_linear']:.2f}%" in verdict
    assert (out / "eval_log.txt").read_text().count("$ ") == 1
    assert len(handed.lines) < 15

    # The student writes the discussion: the next hand-in keeps it and has nothing left to say about it.
    mine.write_text(re.sub(r"<<FILL IN: [^>]*>>", "Our own words.", text))
    handed = call(run, out, notebook, demo=True)
    ends_on_its_verdict(out, notebook, handed)                      # handing in again replaces the older verdict
    assert "Our own words." in mine.read_text() and FILL_IN_MARKER not in mine.read_text()
    assert (out / "submission" / "report.md").read_text() == mine.read_text()
    assert not {"report.md written", "report.md is yours"} & {c["name"] for c in handed.final["checks"]}
    assert (out / DRAFT).read_text().count(FILL_IN_MARKER) == DRAFT_PLACES      # the kit's draft, refreshed

    # Outside a demo, weights trained on the kit's generated data are a failure; weights whose record is the course's
    # data set (stated here: the rule reads the record, not 100,000 images) and the student's report pass.
    handed = call(run, out, notebook)
    assert handed.copied and not handed.ok
    assert any(line.startswith(f"  FAIL {TRAINED}") for line in handed.lines)
    course_weights = tmp_path / "final_model.safetensors"
    tensors, metadata = read_weights(run["weights"])
    save_file(tensors, course_weights, metadata={**metadata, **COURSE_RECORD})
    handed = hand_in(out / "submission", weights=course_weights, metrics=run["root"] / "training_metrics.json",
                     notebook=notebook, output_dir=out, data_dir=run["data_dir"])
    assert handed.copied and handed.ok, "\n".join(handed.lines)
    assert re.search(r"eval\.py: All \d+ checks passed", "\n".join(handed.lines))
    assert not any(TRAINED in line for line in handed.lines)              # passed: not among the warnings
    assert notebook.read_text() == saved


def test_section_7_refuses_a_notebook_autosaved_during_run_all(run, tmp_path):
    """Jupyter's autosave before Run All, or in the middle of Section 6: Section 7 refuses during Run All and
    copies nothing (the hand-in after the save is the test above)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    section_6 = next(i for i, c in enumerate(nb.cells) if c.source.startswith("# 6. "))
    notebook, out = tmp_path / "CS461_Assignment1.ipynb", tmp_path / "out"
    for ran_until in (-1, section_6 + 3):
        saved_notebook(notebook, run["fingerprint"], ran_until=ran_until)
        handed = call(run, out, notebook, demo=True)
        assert not handed.copied and "never ran" in handed.lines[0], handed.lines
        assert not (out / "submission").exists()
