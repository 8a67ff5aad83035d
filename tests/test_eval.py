"""eval.py and utils.submission: a good submission passes; each kind of broken submission gets its verdict.

One good submission is built once (a random-init "tiny" encoder is enough for structure checks), assembled
with assemble_submission so that its models.py says ARCH = "tiny". Each broken variant is a copy of it with
one thing wrong. Most variants run check_submission (--quick); a few run eval.py's main for its exit status and
printed text, and the good one runs eval.py as a program.
"""
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from threadpoolctl import threadpool_limits

from models import FEATURE_DESIGN, ImageEncoder
from utils.checkpoint import export_encoder
from utils.submission import (SubmissionError, assemble_submission, check_submission, identity_problems,
                          notebook_identity, pretrained_or_network_uses, word_count)

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "eval.py"
ACCURACY_KEYS = ("id_knn", "id_linear", "ood_knn", "ood_linear")

# The probes here fit 160 x 1000 features: threads bring nothing at that size, and on a busy 2-core machine
# their contention makes each lbfgs iteration tens of times slower. The tests run single-threaded.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Tiny data: 8 ID classes (20 train, 10 val each), 8 OOD classes x 20 (OOD: 128 fit, 32 scored).
N_VAL, N_OOD_SCORED = 80, 32


def write_tiny_data(out: Path) -> Path:
    """The embedded data generator's format, at a size where the exact probes take seconds."""
    from utils.synthetic import DataSpec, write_dataset
    write_dataset(out, DataSpec(id_classes=8, train_per_class=20, val_per_class=10, ood_classes=8,
                                ood_per_class=20), seed=0, progress=False)
    return out


def notebook_text(sciper="123456", last_name='"Doe"', first_name='"Jane"', run_output="run id 0123abcd",
                  executed=True) -> str:
    """A minimal notebook whose identity cell assigns the given Python expressions, with the course's Sections 5
    (training, printing `run_output`) and 6 (results), executed or not."""
    identity = f"SCIPER = {sciper}\nLAST_NAME = {last_name}\nFIRST_NAME = {first_name}\n"

    def code(source, printed):
        outputs = [{"output_type": "stream", "name": "stdout", "text": [printed + "\n"]}] if executed else []
        return {"cell_type": "code", "metadata": {}, "execution_count": 2 if executed else None, "outputs": outputs,
                "source": [source]}
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["## 0. SCIPER Number and Name\n"]},
        {"cell_type": "code", "metadata": {}, "execution_count": 1, "outputs": [],
         "source": identity.splitlines(keepends=True)},
        {"cell_type": "markdown", "metadata": {}, "source": ["# 5. Training Loop\n"]},
        code("result = train(cfg)", run_output),
        {"cell_type": "markdown", "metadata": {}, "source": ["# 6. Visualize Results\n"]},
        code("print(final)", "ID k-NN 12.5%"),
    ]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


REPORT = "# Report\n\nWe trained a small encoder with SimCLR and compared k-NN and linear probes " \
         "in and out of distribution. " * 3


@pytest.fixture(scope="module", autouse=True)
def single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, fit_statistics):
    """The files a student hands in, before assembling: tiny weights (arch 'tiny', feature statistics fitted as
    training's export does), notebook, report."""
    out = tmp_path_factory.mktemp("sources")
    export_encoder(fit_statistics(ImageEncoder("tiny")), out / "final_model.safetensors", metadata={"arch": "tiny"})
    (out / "CS461_Assignment1.ipynb").write_text(notebook_text())
    (out / "report.md").write_text(REPORT)
    return out


@pytest.fixture(scope="module")
def good(tmp_path_factory, sources):
    folder = tmp_path_factory.mktemp("good") / "submission"
    assemble_submission(folder, weights=sources / "final_model.safetensors",
                        notebook=sources / "CS461_Assignment1.ipynb", report=sources / "report.md",
                        models=ROOT / "models.py")
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture
def broken(good, tmp_path):
    """A fresh copy of the good submission, to break in one way."""
    return Path(shutil.copytree(good, tmp_path / "submission"))


def quick(folder, data_dir):
    return check_submission(folder, data_dir=data_dir, quick=True, progress=False, echo=False)


def failed(report) -> set:
    return {c.name for c in report.failures}


def run_eval_program(*args, timeout=300) -> subprocess.CompletedProcess:
    """`python eval.py ARGS`, as a student runs it."""
    return subprocess.run([sys.executable, str(EVAL), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **SINGLE_THREAD_ENV})


def run_eval(*args) -> subprocess.CompletedProcess:
    """eval.py's main in this process: its exit status and what it printed (the good submission's check runs the
    program itself, exact_run)."""
    import eval as pre_submission_check
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = pre_submission_check.main([str(a) for a in args])
    return subprocess.CompletedProcess(["eval.py", *map(str, args)], status, out.getvalue(), err.getvalue())


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found exactly once in {path}"
    path.write_text(text.replace(old, new))


# ----------------------------------------------------------------------------------------------------------
# The good submission: eval.py passes in exact mode, --fast agrees
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exact_run(good, data_dir, tmp_path_factory):
    result_path = tmp_path_factory.mktemp("eval") / "result.json"
    process = run_eval_program("-i", good, "-d", data_dir, "--json", result_path, "--no-progress")
    return process, json.loads(result_path.read_text())


def test_good_submission_passes_the_exact_protocol(exact_run, good):
    process, result = exact_run
    assert process.returncode == 0, process.stdout + process.stderr
    assert "FAIL" not in process.stdout and "checks passed" in process.stdout
    assert "PASS models.py imports the grader's way" in process.stdout
    assert "weights load strictly" in process.stdout and "arch 'tiny'" in process.stdout
    assert "PASS notebook identity: SCIPER 123456, Jane Doe" in process.stdout
    assert result["ok"] and result["mode"] == "exact" and result["folder"] == str(good)
    assert result["exit_status"] == process.returncode == 0      # the JSON file says what the process returned
    assert all(check["ok"] for check in result["checks"])
    accuracies = result["accuracies_percent"]
    assert set(accuracies) == set(ACCURACY_KEYS)
    for key, scored in zip(ACCURACY_KEYS, (N_VAL, N_VAL, N_OOD_SCORED, N_OOD_SCORED)):
        # Percent, not a fraction: a whole number of correct images out of `scored`, printed as "12.50%".
        correct = accuracies[key] * scored / 100
        assert 0 <= accuracies[key] <= 100 and abs(correct - round(correct)) < 1e-6, (key, accuracies[key])
        assert f"{accuracies[key]:.2f}%" in process.stdout
    assert re.search(r"ID k-NN\s+\d{1,3}\.\d\d% +\(\d+\.\d s\)", process.stdout)
    assert {"probe id_linear", "features train"} <= set(result["timings_s"])


def test_fast_probes_agree_with_the_exact_ones(exact_run, good, data_dir):
    exact = exact_run[1]["accuracies_percent"]
    report = check_submission(good, data_dir=data_dir, fast=True, progress=False, echo=False)
    assert report.ok and report.mode == "fast", report.summary()
    for key, scored in zip(ACCURACY_KEYS, (N_VAL, N_VAL, N_OOD_SCORED, N_OOD_SCORED)):
        # Within 1 point; on these tiny sets one image is already more than a point, so allow one image.
        assert abs(report.accuracies[key] - exact[key]) <= max(1.0, 100 / scored) + 1e-9, key


# ----------------------------------------------------------------------------------------------------------
# Broken submissions, each with its verdict
# ----------------------------------------------------------------------------------------------------------

def test_missing_folder(tmp_path, data_dir):
    report = quick(tmp_path / "nowhere", data_dir)
    assert failed(report) == {"submission folder"} and "does not exist" in report.failures[0].message


def test_missing_file(broken, data_dir):
    (broken / "report.md").unlink()
    report = quick(broken, data_dir)
    assert failed(report) == {"file report.md"}
    check = report.check("file report.md")
    assert "missing" in check.message and "copy report.md" in check.fix
    assert report.check("report.md words") is None   # nothing to count


def test_changed_feature_dim(broken, data_dir):
    edit(broken / "models.py", "feature_dim = 1000", "feature_dim = 512")
    report = quick(broken, data_dir)
    assert "class variables" in failed(report)
    message = report.check("class variables").message
    assert "feature_dim = 512" in message and "expected 1000" in message
    # The weights (1000-dim feature layer) no longer fit either.
    assert "shape mismatches" in report.check("weights load strictly").message


def test_renamed_keys(broken, data_dir):
    weights = load_file(broken / "final_model.safetensors")
    weights["fc.weight"] = weights.pop("feature_layer.weight")
    save_file(weights, broken / "final_model.safetensors", metadata={"arch": "tiny"})
    report = quick(broken, data_dir)
    assert failed(report) == {"weights load strictly"}
    message = report.check("weights load strictly").message
    assert "1 missing keys: feature_layer.weight" in message and "1 unexpected keys: fc.weight" in message


def test_weight_with_the_wrong_shape(broken, data_dir):
    weights = load_file(broken / "final_model.safetensors")
    weights["feature_layer.bias"] = weights["feature_layer.bias"][:999].clone()
    save_file(weights, broken / "final_model.safetensors", metadata={"arch": "tiny"})
    report = quick(broken, data_dir)
    assert failed(report) == {"weights load strictly"}
    assert "feature_layer.bias: file (999,) vs model (1000,)" in report.check("weights load strictly").message


def test_truncated_weights(broken, data_dir):
    path = broken / "final_model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    report = quick(broken, data_dir)
    assert failed(report) == {"weights load strictly"}
    check = report.check("weights load strictly")
    assert "not a readable safetensors file" in check.message and "truncated" in check.message
    assert "export the weights again" in check.fix


def test_weights_of_another_architecture(broken, data_dir):
    # models.py as the user's own (one ARCH line) but building "small" ("resnet18" is slow on a CPU).
    edit(broken / "models.py", 'ARCH = "tiny"', 'ARCH = "small"')
    report = quick(broken, data_dir)
    assert failed(report) == {"weights load strictly"}
    check = report.check("weights load strictly")
    assert "weights were trained with arch 'tiny' but models.py builds 'small' (ARCH = \"small\")" in check.message
    assert 'set ARCH = "tiny" in the submitted models.py' in check.fix


def test_nan_features(broken, data_dir):
    with open(broken / "models.py", "a") as f:
        f.write("\n\n_get_features = ImageEncoder.get_features\n"
                "ImageEncoder.get_features = lambda self, x: _get_features(self, x) * float('nan')\n")
    report = quick(broken, data_dir)
    assert failed(report) == {"get_features (1 image)"}     # the first failing call is the one FAIL line
    assert "NaN or infinite" in report.check("get_features (1 image)").message


def test_placeholder_sciper(broken, data_dir):
    (broken / "CS461_Assignment1.ipynb").write_text(notebook_text(sciper='"<SCIPER>"'))
    report = quick(broken, data_dir)
    assert failed(report) == {"notebook identity"}
    check = report.check("notebook identity")
    assert "SCIPER is '<SCIPER>'" in check.message and "section 0" in check.fix


def test_report_over_500_words(broken, data_dir):
    (broken / "report.md").write_text("word " * 600)
    report = quick(broken, data_dir)
    assert failed(report) == {"report.md words"}
    assert "600 words counted as a reader does" in report.check("report.md words").message
    assert "600 by `wc -w`; expected at most 500 by both counts" in report.check("report.md words").message


def test_report_over_500_words_by_wc_only(broken, data_dir):
    """A table-heavy report can pass the reader's count and still be over by `wc -w` (rules, pipes, #)."""
    (broken / "report.md").write_text("# Report\n\n" + "word " * 450 + "\n" + "| a | b |\n|---|---|\n" * 20)
    check = quick(broken, data_dir).check("report.md words")
    assert check.status == "fail" and check.message.startswith("491 words") and "572 by `wc -w`" in check.message


def test_data_in_chw_layout(good, data_dir, tmp_path):
    chw = Path(shutil.copytree(data_dir, tmp_path / "chw_data"))
    with np.load(chw / "train.npz") as archive:
        arrays = dict(archive)
    arrays["images"] = arrays["images"].transpose(0, 3, 1, 2)
    np.savez(chw / "train.npz", **arrays)
    report = check_submission(good, data_dir=chw, progress=False, echo=False)   # full mode: files are loaded
    assert failed(report) == {"data train"}
    assert "channels first (CHW)" in report.check("data train").message
    assert not report.accuracies and "structural check failed" in report.probes_skipped


def test_models_py_importing_utils_fails_for_real(broken, data_dir):
    """The grader's own import (a fresh `python -I` beside the course's utils.py) fails, and that is the one FAIL
    line: the static finding is folded into its fix."""
    with open(broken / "models.py", "a") as f:
        f.write("\nfrom utils.data import SPLIT_FILES  # noqa: E402\n")
    process = run_eval("-i", broken, "-d", data_dir, "--quick")
    assert process.returncode == 1, process.stdout + process.stderr
    assert "FAIL models.py imports the grader's way: " in process.stdout
    assert "grader step 2 (import models.py as custom_model, not in sys.modules) fails with ModuleNotFoundError: " \
           "No module named 'utils.data'; 'utils' is not a package" in process.stdout
    assert "models.py imports `utils.data` (line" in process.stdout and "copy what models.py needs" in process.stdout
    assert "PASS weights file readable" in process.stdout   # checked on its own while models.py is unusable
    assert re.search(r"\n1 check failed: models.py imports the grader's way", process.stdout)


def test_weights_without_fitted_statistics_fail(broken, data_dir):
    """An encoder exported without fitting get_features' statistics loads strictly (the buffers hold the identity)
    but would not compute what was measured: eval.py fails it, naming the refit command."""
    export_encoder(ImageEncoder("tiny"), broken / "final_model.safetensors", metadata={"arch": "tiny"})
    report = quick(broken, data_dir)
    assert failed(report) == {"feature statistics fitted"}
    check = report.check("feature statistics fitted")
    assert "feature_statistics_fitted = 0, expected 1" in check.message
    assert "python -m utils.features --weights" in check.fix


def test_notebook_and_eval_agree_on_the_data_folder(tmp_path, monkeypatch):
    """On the hub with $CS461_DATA_DIR set, the notebook (resolve_data_dir) and a bare `python eval.py`
    (check_data without --data-dir) must use the same folder: the variable's, then the hub's once it is unset."""
    from utils import data
    from utils.submission import Report, check_data
    mine, hub = tmp_path / "mine", tmp_path / "hub"
    for folder in (mine, hub):
        folder.mkdir()
        for name in data.SPLIT_FILES.values():
            (folder / name).touch()              # found is enough: load=False does not read them
    monkeypatch.setattr(data, "HUB_DATA_DIR", hub)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(mine))

    def eval_folder() -> Path:
        report = Report(folder=str(tmp_path), mode="quick", echo=False)
        check_data(report, None, None, load=False)
        assert report.ok, [c.line() for c in report.checks]
        return Path(report.data_dir)

    assert eval_folder() == data.resolve_data_dir(verbose=False).resolve() == mine.resolve()
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert eval_folder() == data.resolve_data_dir(verbose=False).resolve() == hub.resolve()


def test_wrong_data_dir_names_the_places_tried(good, tmp_path):
    nowhere = tmp_path / "no_such_data"
    process = run_eval("-i", good, "-d", nowhere, "--quick", "--json")
    assert process.returncode == 1, process.stdout + process.stderr
    result = json.loads(process.stdout[process.stdout.index("\n{") + 1:])
    assert result["ok"] is False and result["exit_status"] == 1     # the JSON says the same as the exit status
    assert f"FAIL data directory: data directory {nowhere} (from --data-dir) does not exist" in process.stdout
    assert "Places tried" in process.stdout and "course hub: /shared/CS461/cs461_assignment1_data" in process.stdout
    assert "1 check failed: data directory" in process.stdout
    assert "%" not in process.stdout   # no accuracies without data, never random substitutes


# ----------------------------------------------------------------------------------------------------------
# Units: word counting, notebook identity, pre-trained weights, assembling
# ----------------------------------------------------------------------------------------------------------

def test_word_count_excludes_code_comments_and_markdown_syntax():
    text = ("# Results\n\n"
            "Our **self-supervised** encoder reaches 36.1% — see [the plot](https://example.com/a/b/c.png).\n\n"
            "```python\nprint('these words are code')\n```\n"
            "<!-- a comment of many words that nobody reads -->\n"
            "| probe | k-NN |\n|---|---|\n| ID | 38.1 |\n\n"
            "1. first point\n- second point\n> quoted <br> line\n")
    # Results | Our self-supervised encoder reaches 36.1% see the plot | probe k-NN ID 38.1 |
    # first point | second point | quoted line
    assert word_count(text) == 1 + 8 + 4 + 2 + 2 + 2
    assert word_count("") == 0
    assert word_count("~~~\nunclosed fence swallows the rest\n") == 0


def test_notebook_identity_reads_assignments_in_code_cells(tmp_path):
    cells = [
        {"cell_type": "markdown", "source": "SCIPER = 999999 in a markdown cell does not count"},
        {"cell_type": "code", "source": ["%matplotlib inline\n", "SCIPER = 234567  # mine\n",
                                         "LAST_NAME: str = 'Müller'\n"]},
        {"cell_type": "code", "source": "!pip list\nFIRST_NAME = input()\n"},
        {"cell_type": "code", "source": "FIRST_NAME = \"Zoé\"\nif True\n"},   # not Python: read line by line
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    assert notebook_identity(path) == {"SCIPER": 234567, "LAST_NAME": "Müller", "FIRST_NAME": "Zoé"}

    path.write_text(json.dumps({"cells": cells[:3]}))
    identity = notebook_identity(path)
    assert identity["FIRST_NAME"] == "input()"   # an expression, reported as such
    assert identity_problems(identity) == ["FIRST_NAME is set by the expression `input()`; expected the name "
                                           "itself in quotes"]
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        notebook_identity(path)


@pytest.mark.parametrize("identity, problem", [
    ({"SCIPER": "<SCIPER>", "LAST_NAME": "Doe", "FIRST_NAME": "Jane"}, "SCIPER is '<SCIPER>'"),
    ({"SCIPER": None, "LAST_NAME": "Doe", "FIRST_NAME": "Jane"}, "SCIPER is None"),
    ({"SCIPER": 0, "LAST_NAME": "Doe", "FIRST_NAME": "Jane"}, "SCIPER is 0 (a placeholder)"),
    ({"SCIPER": 12345, "LAST_NAME": "Doe", "FIRST_NAME": "Jane"}, "SCIPER is 12345 (5 digits)"),
    ({"SCIPER": "123456", "LAST_NAME": "Doe", "FIRST_NAME": "Jane"}, "expected an integer: SCIPER = 123456"),
    ({"SCIPER": 123456, "LAST_NAME": "<LAST_NAME>", "FIRST_NAME": "Jane"}, "LAST_NAME is '<LAST_NAME>'"),
    ({"SCIPER": 123456, "LAST_NAME": "Doe", "FIRST_NAME": "Your name"}, "FIRST_NAME is 'Your name'"),
    ({"SCIPER": 123456, "LAST_NAME": "", "FIRST_NAME": "Jane"}, "LAST_NAME is ''"),
    ({"SCIPER": 123456, "LAST_NAME": "Doe"}, "FIRST_NAME is not assigned anywhere"),
])
def test_identity_placeholders_are_refused(identity, problem):
    problems = identity_problems(identity)
    assert len(problems) == 1 and problem in problems[0], problems


def test_filled_identity_is_accepted():
    assert identity_problems({"SCIPER": 123456, "LAST_NAME": "de la Fontaine", "FIRST_NAME": "Zoé"}) == []


def test_pretrained_weights_and_network_use_are_spotted():
    import ast
    code = ("import torch, torchvision, requests\n"
            "a = torchvision.models.resnet18(weights=None)\n"
            "b = torchvision.models.resnet18(weights='IMAGENET1K_V1')\n"
            "c = torch.hub.load('repo', 'model')\n"
            "from torch.hub import load_state_dict_from_url\n")
    uses = pretrained_or_network_uses(ast.parse(code))
    assert uses == ["line 1: import requests", "line 3: weights='IMAGENET1K_V1'", "line 4: torch.hub.load",
                    "line 5: from torch.hub import load_state_dict_from_url"]


def test_assemble_rewrites_arch_in_the_copy_only(sources, tmp_path, capsys):
    own_models = (ROOT / "models.py").read_text()
    folder = assemble_submission(tmp_path / "out", weights=sources / "final_model.safetensors",
                                 notebook=sources / "CS461_Assignment1.ipynb", report=sources / "report.md",
                                 models=ROOT / "models.py")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["models.py", "final_model.safetensors", "CS461_Assignment1.ipynb", "report.md"])
    copied = (folder / "models.py").read_text()
    assert re.findall(r'^ARCH = "[^"]*"', copied, re.MULTILINE) == ['ARCH = "tiny"']
    assert copied.replace('ARCH = "tiny"', 'ARCH = "resnet18_s2"') == own_models
    assert (ROOT / "models.py").read_text() == own_models   # the user's own file is untouched
    assert "trained with arch 'tiny'" in capsys.readouterr().out


def test_assemble_refuses_placeholders_and_copies_nothing(sources, tmp_path):
    notebook = tmp_path / "CS461_Assignment1.ipynb"
    notebook.write_text(notebook_text(sciper="None", last_name='"<LAST_NAME>"'))
    with pytest.raises(SubmissionError) as info:
        assemble_submission(tmp_path / "out", weights=sources / "final_model.safetensors", notebook=notebook,
                            report=sources / "report.md", models=ROOT / "models.py")
    message = str(info.value)
    assert "SCIPER is None" in message and "LAST_NAME is '<LAST_NAME>'" in message
    assert "section 0" in message and "Nothing was copied" in message
    assert not (tmp_path / "out").exists()


def test_assemble_needs_exactly_one_arch_line_to_rewrite(sources, tmp_path):
    models = tmp_path / "models.py"
    models.write_text((ROOT / "models.py").read_text().replace('ARCH = "resnet18_s2"', 'ARCH = ("resnet18_s2")'))
    with pytest.raises(SubmissionError, match="expected exactly one"):
        assemble_submission(tmp_path / "out", weights=sources / "final_model.safetensors",
                            notebook=sources / "CS461_Assignment1.ipynb", report=sources / "report.md",
                            models=models)
    assert not (tmp_path / "out").exists()


def test_probe_lines_in_percent_and_the_cpu_warning(good, data_dir, monkeypatch, capsys, fit_statistics):
    """Each probe prints its accuracy in percent and its time; a large train set on the CPU in exact mode is
    announced before the slow linear probe (the threshold is lowered here to keep the data small)."""
    from utils.data import load_splits
    from utils.submission import Report, check

    monkeypatch.setattr(check, "LARGE_TRAIN_FOR_CPU", 100)   # train 160 > 100, OOD fit 128 > 100 too
    report = Report(folder="memory")
    check.run_protocol(report, fit_statistics(ImageEncoder("tiny")).eval(), load_splits(data_dir), fast=False,
                       batch_size=64, progress=False)
    out = capsys.readouterr().out
    assert set(report.accuracies) == set(ACCURACY_KEYS) and report.ok
    assert [c.name for c in report.warnings] == ["exact probes on the CPU"] * 2
    assert "use --fast" in report.warnings[0].fix
    assert out.index("WARN exact probes on the CPU") < out.index("ID linear")
    for key, label in zip(ACCURACY_KEYS, ("ID k-NN", "ID linear", "OOD k-NN", "OOD linear")):
        assert re.search(rf"{label} +{report.accuracies[key]:.2f}% +\(\d+\.\d s\)", out), out
    assert "Extracting train features: 160 images, batch 64" in out
    assert report.check("features on the data").status == "pass"


def test_bare_json_flag_prints_the_result_on_standard_output(good, data_dir):
    process = run_eval("-i", good, "-d", data_dir, "--quick", "--json", "--no-progress")
    assert process.returncode == 0, process.stdout + process.stderr
    result = json.loads(process.stdout[process.stdout.index("\n{") + 1:])
    assert result["ok"] is True and result["mode"] == "quick"


def test_statistics_fitted_for_another_feature_design(broken, data_dir):
    """The weights record the design their statistics were fitted for; a models.py whose FEATURE_DESIGN has since
    changed would apply them to features they do not belong to: a failure naming the command that refits them."""
    weights = load_file(broken / "final_model.safetensors")
    save_file(weights, broken / "final_model.safetensors",
              metadata={"arch": "tiny", "feature_design": json.dumps(FEATURE_DESIGN.as_dict())})
    assert failed(quick(broken, data_dir)) == set()                    # recorded and equal: nothing to say
    edit(broken / "models.py", "whiten=0.25,", "whiten=0.5,")
    report = quick(broken, data_dir)
    assert failed(report) == {"weights load strictly"}
    check = report.check("weights load strictly")
    assert "fitted for another get_features design" in check.message and "whiten" in check.message
    assert "python -m utils.features --weights" in check.fix


# ----------------------------------------------------------------------------------------------------------
# What the hand-in must be: the executed notebook of the run, weights trained on the course's data, the
# student's own report
# ----------------------------------------------------------------------------------------------------------

def test_the_committed_unexecuted_notebook_fails_even_with_an_identity(broken, data_dir):
    """The committed notebook has no outputs: it is not an executed notebook, whatever its identity says."""
    import nbformat
    from utils.headless import NOTEBOOK, fill_identity
    nb = nbformat.read(NOTEBOOK, as_version=4)
    fill_identity(nb)
    nbformat.write(nb, broken / "CS461_Assignment1.ipynb")
    report = quick(broken, data_dir)
    assert failed(report) == {"notebook executed"}
    check = report.check("notebook executed")
    assert "Section 5 (training" in check.message and "Section 6 (results" in check.message and "save" in check.fix
    assert report.check("notebook identity").status == "pass"


def test_sections_without_outputs_fail_and_renamed_headings_warn(broken, data_dir):
    (broken / "CS461_Assignment1.ipynb").write_text(notebook_text(executed=False))
    assert failed(quick(broken, data_dir)) == {"notebook executed"}
    text = notebook_text().replace("# 5. Training Loop", "# Training").replace("# 6. Visualize Results", "# Plots")
    (broken / "CS461_Assignment1.ipynb").write_text(text)
    report = quick(broken, data_dir)
    assert report.ok and report.check("notebook executed").status == "warn"


TRAINED = "weights trained on the course's data"


def reexport(folder: Path, drop=(), **metadata) -> None:
    """The submission's weights written again with other metadata (the tensors unchanged): the keys in `drop`
    removed, `metadata` added."""
    from utils.checkpoint import read_weights
    path = folder / "final_model.safetensors"
    tensors, old = read_weights(path)
    save_file(tensors, path, metadata={**{k: v for k, v in old.items() if k not in drop}, **metadata})


COURSE_RECORD = dict(trained_on="course", train_data="/home/me/cs461_assignment1_data/train.npz",
                     train_images="100000", train_classes="200", train_per_class="500", val_images="10000",
                     val_classes_in_train="200")


def test_only_weights_trained_on_the_course_data_pass(broken, data_dir):
    """What the weights record of their training set decides (utils.data.training_data_record at export): the
    course's shape passes wherever the files were; the generated data, other data and a subset fail, unless a demo."""
    reexport(broken, **COURSE_RECORD)
    check = quick(broken, data_dir).check(TRAINED)
    assert check.status == "pass" and "100000 training images of 200 classes" in check.message
    for record, words in [(dict(trained_on="generated", train_data="/x/train.npz", train_images="160"),
                           "generated data"),
                          (dict(COURSE_RECORD, trained_on="other", train_images="50000", train_per_class="250"),
                           "not the course's data set"),
                          (dict(trained_on="npz", train_images="50000"), "npz")]:
        reexport(broken, drop=COURSE_RECORD, **record)
        report = quick(broken, data_dir)
        assert failed(report) == {TRAINED}, report.summary()
        check = report.check(TRAINED)
        assert words in check.message and "DATA_DIR" in check.fix and "200 classes of 500" in check.message
        demo = check_submission(broken, data_dir=data_dir, quick=True, progress=False, echo=False, demo=True)
        assert demo.ok and demo.check(TRAINED).status == "warn"
    process = run_eval("-i", broken, "-d", data_dir, "--quick", "--demo")
    assert process.returncode == 0, process.stdout + process.stderr


def test_the_kits_reference_weights_and_report_fail_even_in_a_demo(broken, data_dir):
    """The top-level final_model.safetensors and report.md are the kit's reference: copied into a folder by
    hand, each is one FAIL line saying so (the probes still run on the reference weights)."""
    shutil.copyfile(ROOT / "final_model.safetensors", broken / "final_model.safetensors")
    shutil.copyfile(ROOT / "report.md", broken / "report.md")
    edit(broken / "models.py", 'ARCH = "tiny"', 'ARCH = "resnet18_s2"')
    for demo in (False, True):
        report = check_submission(broken, data_dir=data_dir, quick=True, progress=False, echo=False, demo=demo)
        assert failed(report) == {TRAINED, "report.md is yours"}, report.summary()
        assert "the kit's reference" in report.check(TRAINED).message
        assert "Tiny ImageNet" in report.check(TRAINED).message
        assert "reference report" in report.check("report.md is yours").message


def test_the_untouched_report_draft_fails_and_a_started_one_warns(broken, data_dir, tmp_path):
    from utils.submission.handin import draft_text
    metrics = {"config": {"arch": "tiny", "loss": "ntxent", "global_views": 2, "local_views": 0, "batch_size": 64,
                          "optimizer": "adamw", "lr": 0.002}, "fingerprint": "0123abcd", "epochs": 2, "steps": 10,
               "train_minutes": 0.1, "device": "cpu", "data": {"n_train": 160, "trained_on": "generated"}}
    draft = draft_text({"accuracies_percent": dict.fromkeys(ACCURACY_KEYS, 12.5)}, metrics)
    (broken / "report.md").write_text(draft)
    check = quick(broken, data_dir).check("report.md is yours")
    assert check.status == "fail" and "every place marked" in check.message and "my_report.md" in check.fix
    demo = check_submission(broken, data_dir=data_dir, quick=True, progress=False, echo=False, demo=True)
    assert demo.ok and demo.check("report.md is yours").status == "warn"
    (broken / "report.md").write_text(draft.replace("<<FILL IN: your title>>", "Contrastive features", 1))
    report = quick(broken, data_dir)
    assert report.ok and report.check("report.md written").status == "warn"


def test_weights_that_record_no_data_and_the_cpu_network_warn(good, data_dir):
    report = quick(good, data_dir)
    assert report.ok
    assert report.check(TRAINED).status == "warn"
    network = report.check("network size")
    assert network.status == "warn" and "'tiny'" in network.message and "CS461_PROFILE=full" in network.fix


def test_a_notebook_of_another_run_warns(broken, data_dir):
    reexport(broken, fingerprint="0123abcd")
    report = quick(broken, data_dir)
    assert report.check("notebook shows the weights' run").status == "pass"
    assert report.weights_record["fingerprint"] == "0123abcd"
    reexport(broken, fingerprint="feedbeef")
    check = quick(broken, data_dir).check("notebook shows the weights' run")
    assert check.status == "warn" and "feedbeef" in check.message


def test_fill_in_markers_left_in_the_report_warn(broken, data_dir):
    (broken / "report.md").write_text(REPORT + "\n<<FILL IN: why>>\n\n<<FILL IN: what next>>\n")
    report = quick(broken, data_dir)
    assert report.ok
    check = report.check("report.md written")
    assert check.status == "warn" and "2 places" in check.message
