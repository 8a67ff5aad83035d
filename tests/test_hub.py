"""`make hub`'s logic that runs without building a profile's venv (tools/hub.py, tools/venvs.py): when a venv is
rebuilt, how an interpreter is found, and the checks each step makes of what the notebook and eval.py wrote."""
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import hub  # noqa: E402
import venvs  # noqa: E402


def test_a_venv_is_built_once_and_rebuilt_from_scratch_when_its_pins_change(tmp_path, monkeypatch):
    commands = []

    def run(command, **_):
        commands.append(command)
        if command[1:3] == ["-m", "venv"]:            # what `python -m venv` leaves: the interpreter
            (Path(command[3]) / "bin").mkdir(parents=True)
            (Path(command[3]) / "bin" / "python").write_text("")

    monkeypatch.setattr(venvs.subprocess, "run", run)
    monkeypatch.setattr(venvs, "python_version", lambda python: "3.12.1")
    pins, venv = tmp_path / "requirements-hub-x.txt", tmp_path / ".venv-hub-x"
    pins.write_text("numpy==1.26.4\n")
    assert venvs.build_venv(venv, "python3.12", pins) == venv / "bin" / "python"
    assert [c[1:3] for c in commands] == [["-m", "venv"], ["-m", "pip"]] and commands[1][-1] == str(pins)
    (venv / "left-over").write_text("")

    commands.clear()
    venvs.build_venv(venv, "python3.12", pins)         # same pins, same Python: nothing to do
    assert commands == [] and (venv / "left-over").exists()

    pins.write_text("numpy==2.3.5\n")
    venvs.build_venv(venv, "python3.12", pins)         # new pins: a fresh venv, nothing left from the old one
    assert [c[1:3] for c in commands] == [["-m", "venv"], ["-m", "pip"]]
    assert not (venv / "left-over").exists()
    assert json.loads((venv / venvs.STAMP).read_text())["python"] == "3.12.1"


def test_find_python_takes_a_working_interpreter_and_names_what_it_tried():
    assert venvs.find_python(sys.executable) == sys.executable
    with pytest.raises(SystemExit, match=r"no runnable interpreter for /nonexistent/python3\.99 .*HUB_PYTHON="):
        venvs.find_python("/nonexistent/python3.99")


def test_section_7_needs_the_four_files_and_a_passing_eval(tmp_path):
    (tmp_path / "submission").mkdir()
    for name in ("models.py", "report.md"):
        (tmp_path / "submission" / name).write_text("")
    with pytest.raises(hub.StepFailed, match=r"missing \['final_model.safetensors', 'CS461_Assignment1.ipynb'\]"):
        hub.section_7(tmp_path)
    for name in ("final_model.safetensors", "CS461_Assignment1.ipynb"):
        (tmp_path / "submission" / name).write_text("")
    with pytest.raises(hub.StepFailed, match="Section 7 wrote no .*eval_result.json"):
        hub.section_7(tmp_path)
    (tmp_path / "eval_result.json").write_text(json.dumps({"ok": False, "summary": "1 check failed."}))
    with pytest.raises(hub.StepFailed, match="found failures: 1 check failed"):
        hub.section_7(tmp_path)


def test_the_replica_and_eval_agree_to_eval_s_two_decimals():
    evaluation = {"accuracies_percent": {"id_knn": 36.12, "id_linear": 40.0}}
    hub.accuracies_agree({"accuracies_fraction": {"id_knn": 0.36118, "id_linear": 0.4}}, evaluation)
    with pytest.raises(hub.StepFailed, match=r"differ from eval.py's: \{'id_linear': \{'eval_percent': 40.0, "
                                             r"'replica_percent': 40.5\}\}$"):
        hub.accuracies_agree({"accuracies_fraction": {"id_knn": 0.3612, "id_linear": 0.405}}, evaluation)
    # The likely cause is named only when eval.py's record says its probes ran without the extension.
    patched = {"accuracies_fraction": {"id_knn": 0.3612, "id_linear": 0.405}, "sklearnex_active": True}
    with pytest.raises(hub.StepFailed, match=r"patched by Intel's extension, eval.py's probes ran on "
                                             r"scikit-learn 1\.6\.1\)$"):
        hub.accuracies_agree(patched, {**evaluation, "probes_backend": "scikit-learn 1.6.1"})
    with pytest.raises(hub.StepFailed, match=r"'replica_percent': 40.5\}\}$"):
        hub.accuracies_agree(patched, {**evaluation,
                                       "probes_backend": "scikit-learn 1.6.1 with Intel's extension 2025.10.0"})


def test_explorer_kind_reads_what_the_explorer_cell_showed(tmp_path):
    view = new_output("display_data", data={hub.WIDGET_VIEW: {"model_id": "abc"}, "text/plain": "VBox(...)"})
    figure = new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})
    path = tmp_path / "executed.ipynb"
    for outputs, kind in (([view], "widget"), ([figure], "static figure")):
        cell = new_code_cell("explorer.neighbour_explorer(images, features, labels)", outputs=outputs)
        nbformat.write(new_notebook(cells=[new_code_cell("x = 1"), cell]), path)
        assert hub.explorer_kind(path) == kind
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), path)
    assert hub.explorer_kind(path) is None


def test_a_hanging_eval_py_stops_the_eval_step(tmp_path, monkeypatch):
    import subprocess

    def hang(command, **kwargs):
        assert kwargs["timeout"] == 3600
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(hub.StepFailed, match=r"eval\.py ran longer than 3600 s"):
        hub.run_eval(tmp_path / "python", tmp_path / "submission", str(tmp_path), tmp_path / "eval.json")
