"""The notebook's Section 7 (utils/submission/handin.py) on a real, tiny run: it hands in only the saved,
executed notebook of the run, drafts the report from the run's own numbers, never overwrites the student's
report, and prints a short verdict."""
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from utils.headless import NOTEBOOK, fill_identity
from utils.submission.course import COURSE_BASELINES, FILL_IN_MARKER
from utils.submission.handin import DRAFT, MY_REPORT, hand_in
from utils.submission.report_draft import DRAFT_MAX_WORDS, drafted_for
from utils.train import TrainConfig, train

from test_eval import SINGLE_THREAD_ENV, notebook_text, write_tiny_data

IDENTITY = {"SCIPER": 123456, "LAST_NAME": "Doe", "FIRST_NAME": "Jane"}


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


@pytest.fixture
def single_threaded_eval(monkeypatch):
    for key, value in SINGLE_THREAD_ENV.items():
        monkeypatch.setenv(key, value)


def call(run, out: Path, notebook: Path, **kwargs):
    out.mkdir(exist_ok=True)
    return hand_in(out / "submission", weights=run["weights"], metrics=run["root"] / "training_metrics.json",
                   notebook=notebook, output_dir=out, data_dir=run["data_dir"], **{"identity": IDENTITY, **kwargs})


def test_the_unsaved_notebook_is_refused_and_nothing_is_copied(run, tmp_path, capsys):
    nb = nbformat.read(NOTEBOOK, as_version=4)      # as handed out: Sections 5 and 6 hold no outputs
    fill_identity(nb)
    nbformat.write(nb, tmp_path / "saved.ipynb")
    handed = call(run, tmp_path / "out", tmp_path / "saved.ipynb")
    assert not handed.copied and not (tmp_path / "out" / "submission").exists()
    printed = capsys.readouterr().out
    assert printed.startswith("NOT COPIED") and "Section 5 (training" in printed and "Ctrl+S" in printed

    (tmp_path / "other.ipynb").write_text(notebook_text(run_output="run fingerprint 0000ffff"))
    handed = call(run, tmp_path / "out", tmp_path / "other.ipynb")
    assert not handed.copied and run["fingerprint"] in handed.lines[0]

    handed = call(run, tmp_path / "out", tmp_path / "other.ipynb", identity={**IDENTITY, "SCIPER": None})
    assert not handed.copied and "SCIPER" in "\n".join(handed.lines)


def numbers(text: str) -> list[str]:
    """The numbers of a text, code spans (the run's name, file names) left out."""
    return re.findall(r"\d+(?:\.\d+)?", re.sub(r"`[^`]*`", " ", text))


def test_hand_in_drafts_the_report_from_the_run_and_keeps_the_students(run, tmp_path, single_threaded_eval):
    notebook = tmp_path / "saved.ipynb"
    notebook.write_text(notebook_text(run_output=f"Exported ... run fingerprint {run['fingerprint']}."))
    out = tmp_path / "out"
    handed = call(run, out, notebook, demo=True)      # trained on generated data: accepted as a demo only
    assert handed.copied and handed.ok, "\n".join(handed.lines)

    # The draft: within its words, every number from the run (metrics, eval.py) or the course's baselines.
    mine = out / MY_REPORT
    text = mine.read_text()
    assert len(text.split()) <= DRAFT_MAX_WORDS
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
    assert text.count(FILL_IN_MARKER) >= 3

    # Handed in as report.md; eval.py checked the folder again with it and warns about the marked places.
    assert (out / "submission" / "report.md").read_text() == text
    assert handed.final["checks"] != handed.result["checks"]
    warned = {c["name"] for c in handed.final["checks"] if c["status"] == "warn"}
    assert {"report.md written", "weights trained on real images", "network size"} <= warned
    verdict = "\n".join(handed.lines)
    assert re.search(r"eval\.py: All \d+ checks passed", verdict)
    assert "WARN report.md written" in verdict and f"{accuracies['ood_linear']:.2f}%" in verdict
    assert (out / "eval_log.txt").read_text().count("$ ") == 2
    assert len(handed.lines) < 15

    # The student writes the discussion: the next hand-in keeps it and has nothing left to warn about it.
    mine.write_text(re.sub(r"<<FILL IN: [^>]*>>", "Our own words.", text))
    handed = call(run, out, notebook, demo=True)
    assert "Our own words." in mine.read_text() and FILL_IN_MARKER not in mine.read_text()
    assert (out / "submission" / "report.md").read_text() == mine.read_text()
    assert "report.md written" not in {c["name"] for c in handed.final["checks"]}
    assert (out / DRAFT).read_text().count(FILL_IN_MARKER) >= 3      # the kit's draft, refreshed

    # Outside a demo, weights trained on the kit's generated data are a failure.
    handed = call(run, out, notebook)
    assert handed.copied and not handed.ok
    assert any(line.startswith("  FAIL weights trained on real images") for line in handed.lines)
