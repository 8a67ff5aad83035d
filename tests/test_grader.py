"""The grader's own sequence (utils/submission/grader.py and its replica of the course's eval.py): it agrees with
eval.py on the shipped submission, and each known way a models.py or weights file breaks the grader is one FAIL
line of eval.py naming the grader's step.

The replica runs as a subprocess in a clean `python -I`, on copies of the four files, with the course's data
loading (DataLoader(batch_size=64, shuffle=False, num_workers=4), ToTensor) and probes (n_jobs=-1,
accuracy_score). The short-profile model is compared the same way in tests/test_notebook_hub.py, on the
submission its notebook run hands in.
"""
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import torch
from safetensors.torch import load_file, save_file

from utils.checkpoint import export_encoder
from utils.headless import NOTEBOOK, fill_identity
from utils.submission import assemble_submission, check_submission
from utils.submission.grader import GRADER_STEPS, accuracy_differences, run_course_grader
from utils.synthetic import DataSpec, write_dataset

ROOT = Path(__file__).resolve().parents[1]
ACCURACY_KEYS = ("id_knn", "id_linear", "ood_knn", "ood_linear")
COURSE_LINES = {"id_knn": "k-NN Accuracy", "id_linear": "Linear Probe Accuracy", "ood_knn": "OOD k-NN Accuracy",
                "ood_linear": "OOD Linear Probe Accuracy"}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """5 ID classes (12 train, 6 val each), 5 OOD classes x 10: the shipped ResNet-18 extracts it in seconds."""
    out = tmp_path_factory.mktemp("small_data")
    write_dataset(out, DataSpec(id_classes=5, train_per_class=12, val_per_class=6, ood_classes=5,
                                ood_per_class=10), seed=3, progress=False)
    return out


def identified_notebook(path: Path, fingerprint: str = "aac461f2") -> Path:
    """The committed notebook with an identity, saved as after Run All: every code cell ran, and Section 5's
    output names the run's `fingerprint` (by default the shipped weights')."""
    from nbformat.v4 import new_output
    nb = nbformat.read(NOTEBOOK, as_version=4)
    fill_identity(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = cell.execution_count or 1
            if "while not run.finished" in cell.source:
                cell.outputs = [new_output("stream", name="stdout", text=f"Exported ... run id {fingerprint}.\n")]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped submission: this repository's models.py, final_model.safetensors and report.md, and its notebook
    with an identity filled in (the grader gets these four files and nothing else)."""
    folder = tmp_path_factory.mktemp("shipped")
    for name in ("models.py", "final_model.safetensors", "report.md"):
        shutil.copyfile(ROOT / name, folder / name)
    identified_notebook(folder / NOTEBOOK.name)
    return folder


def printed_course_accuracies(stdout: str) -> dict[str, str]:
    """{"id_knn": "0.73%", ...}: the replica's lines, a fraction followed by "%" as the course prints them."""
    found = {key: re.search(rf"^{re.escape(line)}: (\d\.\d\d%)$", stdout, re.MULTILINE)
             for key, line in COURSE_LINES.items()}
    return {key: match.group(1) for key, match in found.items() if match}


def assert_same_accuracies(grader, eval_percent: dict[str, float], eval_stdout: str, keys=ACCURACY_KEYS) -> None:
    """The replica's fractions and eval.py's percentages agree to each one's printed precision."""
    printed = printed_course_accuracies(grader.stdout)
    for key in keys:
        fraction = grader.accuracies[key]
        assert printed[key] == f"{fraction:.2f}%", (key, printed, grader.stdout)
        assert printed[key] == f"{eval_percent[key] / 100:.2f}%", (key, printed[key], eval_percent[key])
    assert not accuracy_differences(grader.accuracies, {key: eval_percent[key] for key in keys})
    assert f"{eval_percent['id_knn']:.2f}%" in eval_stdout


def test_the_replica_agrees_with_eval_to_eval_s_printed_precision():
    percent = {"id_knn": 34.2, "id_linear": 48.6}
    assert accuracy_differences({"id_knn": 0.34204, "id_linear": 0.486}, percent) == {}
    assert accuracy_differences({"id_knn": 0.344, "id_linear": 0.486}, percent) == {
        "id_knn": {"eval_percent": 34.2, "replica_percent": 34.4}}
    assert list(accuracy_differences({"id_knn": 0.342}, percent)) == ["id_linear"]     # a number the replica lacks


def test_grader_replica_and_eval_agree_on_the_shipped_submission(shipped, small_data, tmp_path):
    grader = run_course_grader(shipped, data_dir=small_data)
    assert grader.ok, grader.stdout + grader.stderr
    assert grader.steps_passed == ["files", "import", "build", "load", "shape check", "data", "probes"]
    assert grader.stdout.startswith("Using device: cpu") and "Evaluation completed." in grader.stdout

    result_path = tmp_path / "eval.json"
    from test_eval import run_eval
    process = run_eval("-i", shipped, "-d", small_data, "--json", result_path, "--no-progress")
    result = json.loads(result_path.read_text())
    # The shipped weights and report are the kit's reference, not a submission: the one failure each, while every
    # check of the grader's steps passes and the probes run.
    assert process.returncode == 1 and result["exit_status"] == 1, process.stdout + process.stderr
    assert {c["name"] for c in result["checks"] if c["status"] == "fail"} == {
        "weights trained on the course's data", "report.md is yours"}, process.stdout
    assert "PASS models.py imports the grader's way" in process.stdout
    assert_same_accuracies(grader, result["accuracies_percent"], process.stdout)


def test_grader_replica_reports_the_step_and_the_error(shipped, tmp_path):
    """What the course's eval.py raises, the replica raises too, and records at which step."""
    folder = Path(shutil.copytree(shipped, tmp_path / "no_report"))
    (folder / "report.md").unlink()
    run = run_course_grader(folder, data_dir=tmp_path)
    assert not run.ok and run.failed_step == "files" and run.steps_passed == []
    assert run.error == "AssertionError: `report.md` not found in the submission folder."
    assert "Traceback" in run.stderr and run.returncode == 1
    with pytest.raises(ValueError, match="the probes need data_dir"):
        run_course_grader(folder)


# ----------------------------------------------------------------------------------------------------------
# Known-incompatible submissions: each is one FAIL line of eval.py, naming the grader's step
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_submission(tmp_path_factory, fit_statistics):
    """A good submission with a tiny encoder (statistics fitted, as training exports them)."""
    sources = tmp_path_factory.mktemp("tiny_sources")
    export_encoder(fit_statistics(ImageEncoderTiny()), sources / "final_model.safetensors", metadata={"arch": "tiny"})
    (sources / "report.md").write_text("# Report\n\n" + "We discuss the OOD results of a small encoder. " * 8)
    folder = tmp_path_factory.mktemp("tiny_good") / "submission"
    assemble_submission(folder, weights=sources / "final_model.safetensors",
                        notebook=identified_notebook(sources / NOTEBOOK.name), report=sources / "report.md",
                        models=ROOT / "models.py")
    return folder


def ImageEncoderTiny():
    from models import ImageEncoder
    return ImageEncoder("tiny")


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write("\n" + text)


def postponed_dataclass(folder: Path) -> None:
    text = (folder / "models.py").read_text()
    text = text.replace("\nimport math\n", "\nfrom __future__ import annotations\n\nimport math\n"
                        "from dataclasses import dataclass\n", 1)
    (folder / "models.py").write_text(text + "\n\n@dataclass\nclass Settings:\n    width: int = 1\n")


def extra_key(folder: Path) -> None:
    path = folder / "final_model.safetensors"
    weights = load_file(path)
    weights["extra.weight"] = torch.zeros(3)
    save_file(weights, path, metadata={"arch": "tiny"})


def file_at_import(folder: Path) -> None:
    (folder / "feature_config.json").write_text("{}")   # beside models.py here; the grader gets four files only
    append(folder / "models.py", "from pathlib import Path as _Path\n"
           "_CONFIG = _Path(__file__).with_name('feature_config.json').read_text()\n")


VARIANTS = {
    # name: (how to break the submission, the check that fails, the grader step it names, words of the fix)
    "dataclass under postponed annotations": (postponed_dataclass, "models.py imports the grader's way", "import",
                                              "from __future__ import annotations"),
    "top-level import of a project module": (
        lambda f: append(f / "models.py", "from utils.features import fit_feature_statistics\n"),
        "models.py imports the grader's way", "import", "copy what models.py needs"),
    "relative import": (lambda f: append(f / "models.py", "from .helpers import widths\n"),
                        "models.py imports the grader's way", "import", "lone module"),
    "a file read at import time": (file_at_import, "models.py imports the grader's way", "import",
                                   "reads a file when it is imported"),
    "ImageEncoder() needs an argument": (
        lambda f: (f / "models.py").write_text((f / "models.py").read_text().replace(
            "def __init__(self, arch: str = ARCH,", "def __init__(self, arch: str,", 1)),
        "ImageEncoder() builds", "build", "give every constructor argument a default"),
    "get_features returns a tuple": (
        lambda f: append(f / "models.py", "_get_features = ImageEncoder.get_features\n"
                         "ImageEncoder.get_features = lambda self, x: (_get_features(self, x), None)\n"),
        "get_features (1 image)", "shape check", "return only the features tensor"),
    "a weights file with an extra key": (extra_key, "weights load strictly", "load", "export the weights"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_known_incompatible_submission_is_one_fail_naming_the_grader_step(variant, tiny_submission, tmp_path):
    breaks, check_name, step, fix_words = VARIANTS[variant]
    folder = Path(shutil.copytree(tiny_submission, tmp_path / "submission"))
    breaks(folder)
    report = check_submission(folder, data_dir=tmp_path, quick=True, progress=False, echo=False)
    failures = [c for c in report.failures if not c.name.startswith("data")]   # no data here: not the point
    assert [c.name for c in failures] == [check_name], [c.line() for c in report.failures]
    assert GRADER_STEPS[step] in failures[0].message, failures[0].line()
    assert fix_words in failures[0].fix, failures[0].line()


def test_the_good_tiny_submission_passes_the_grader_sequence(tiny_submission, tmp_path):
    """The variants' baseline: the same folder unbroken passes every model check."""
    report = check_submission(tiny_submission, data_dir=tmp_path, quick=True, progress=False, echo=False)
    assert [c.name for c in report.failures if not c.name.startswith("data")] == []
    assert report.check("models.py imports the grader's way").status == "pass"


def test_eval_prints_the_graders_error_for_the_original_defect(tiny_submission, tmp_path):
    """The defect that once reached the grader (a dataclass under postponed annotations), through eval.py itself."""
    folder = Path(shutil.copytree(tiny_submission, tmp_path / "submission"))
    postponed_dataclass(folder)
    from test_eval import run_eval
    process = run_eval("-i", folder, "--quick")
    assert process.returncode == 1
    line = next(line for line in process.stdout.splitlines() if line.startswith("FAIL models.py imports"))
    assert "AttributeError: 'NoneType' object has no attribute '__dict__'" in line
    assert "Delete the `from __future__ import annotations` line" in line
