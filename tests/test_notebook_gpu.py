"""benchmarks/notebook_gpu.py, the prepared GPU check of the student's path, on the CPU: its plan and command
lines, the sections it times, the notebook it saves for Section 7, its cell runner, and the settings cell's
training budget from $CS461_TIME_BUDGET_MIN. The run itself needs a GPU (benchmarks/README.md)."""
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tools"))
import notebook_gpu  # noqa: E402
from build_notebook import build  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "notebook_gpu.py"


@pytest.fixture(scope="module")
def built_notebook(tmp_path_factory) -> Path:
    """The notebook as tools/build_notebook.py writes it now (the committed copy may lag behind while editing)."""
    path = tmp_path_factory.mktemp("nb") / "CS461_Assignment1.ipynb"
    nbformat.write(build(), path)
    return path


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(SCRIPT), "--pack", ".data/a.npz", ".data/b.npz", "--budget-min", "2",
                           "--work", str(work), "--out", str(tmp_path / "out"), "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"tiny64_packs.py unpack --out {work / 'data'} .data/a.npz .data/b.npz" in out
    for line in ("CS461_PROFILE=full", "CS461_TIME_BUDGET_MIN=2", f"CS461_DATA_DIR={work / 'data'}",
                 f"CS461_OUTPUT_DIR={work / 'output'}", f"CS461_SUBMISSION_DIR={work / 'submission'}"):
        assert f"  {line}\n" in out, line
    assert "7. Submission Instructions" in out
    assert not work.exists() and not (tmp_path / "out").exists()


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        notebook_gpu.parse_args(["--budget-min", "2"])                       # no data
    with pytest.raises(SystemExit):
        notebook_gpu.parse_args(["--data-dir", "x", "--budget-min", "0"])
    plan = notebook_gpu.make_plan(notebook_gpu.parse_args(["--data-dir", "/data", "--budget-min", "0.5"]))
    assert plan.unpack is None and plan.env["CS461_DATA_DIR"] == "/data" and plan.env["CS461_TIME_BUDGET_MIN"] == "0.5"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_full_profile_refuses_a_machine_without_gpu(tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        notebook_gpu.main(["--data-dir", str(tmp_path), "--work", str(tmp_path / "w"), "--out", str(tmp_path)])


def test_sections_follow_the_notebook_and_section_0_is_filled(built_notebook):
    parts = notebook_gpu.sections(notebook_gpu.notebook_cells(built_notebook))
    titles = [title for title, _ in parts]
    assert titles[0] == "setup" and [t.split(".")[0] for t in titles[1:]] == [str(n) for n in range(8)], titles
    section_0 = dict(parts)[titles[1]]
    assert any(source.startswith("SCIPER = 100000") for source in section_0)


def test_the_saved_notebook_holds_each_sections_output_for_section_7(built_notebook, tmp_path):
    """Section 7 hands in the notebook as saved: after the runner's sections, the saved file passes the hand-in's
    check (outputs in Sections 5 and 6, the run's fingerprint among them)."""
    from utils.submission.handin import saved_notebook_problem
    cells = notebook_gpu.notebook_cells(built_notebook)
    records = [{"section": title, "output": f"ran {title}" + (", run id 0123abcd" if title.startswith("5.")
                                                                 else "")}
               for title, _ in notebook_gpu.sections(cells) if not title.startswith("7.")]
    path = tmp_path / "saved.ipynb"
    notebook_gpu.save_with_outputs(cells, records[:5], path)      # cut before training: refused
    assert "Section 5 (training" in saved_notebook_problem(path, "0123abcd")
    notebook_gpu.save_with_outputs(cells, records, path)
    assert saved_notebook_problem(path, "0123abcd") is None
    assert saved_notebook_problem(path, "feedbeef") is not None


def test_runner_times_sections_captures_output_and_stops_at_a_failure(tmp_path):
    parts = [("setup", ["%matplotlib inline\nx = 2", "print('hello', x)"]),
             ("1. Broken", ["print('before')", "1 / 0", "print('never')"]),
             ("2. Never", ["print('not reached')"])]
    saved = []
    with open(tmp_path / "log", "w") as log:
        _shell, records = notebook_gpu.run_sections(parts, log, on_section=lambda r: saved.append(len(r)))
    assert [r["section"] for r in records] == ["setup", "1. Broken"] and saved == [1, 2]
    assert records[0]["error"] is None and "hello 2" in records[0]["output"] and records[0]["seconds"] >= 0
    assert records[1]["error"].startswith("cell 2 of the section: ZeroDivisionError")
    assert "before" in records[1]["output"] and "never" not in records[1]["output"]
    assert "===== 1. Broken =====" in (tmp_path / "log").read_text()


def test_settings_cell_takes_the_budget_from_the_environment(built_notebook, tmp_path, monkeypatch):
    """The full profile's budget is $CS461_TIME_BUDGET_MIN when set (the short GPU check sets 2 minutes)."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(ROOT)
    for key, value in {"CS461_PROFILE": "full", "CS461_TIME_BUDGET_MIN": "0.5", "CS461_DATA_DIR": str(data),
                       "CS461_OUTPUT_DIR": str(tmp_path / "out")}.items():
        monkeypatch.setenv(key, value)
    parts = notebook_gpu.sections(notebook_gpu.notebook_cells(built_notebook))
    settings = [s for s in dict(parts)[parts[1][0]] if "PROFILE =" in s]
    assert len(settings) == 1
    setup = [("setup", [s for s in dict(parts)["setup"] if "check_environment" not in s]), ("settings", settings)]
    with open(tmp_path / "log", "w") as log:
        shell, records = notebook_gpu.run_sections(setup, log)
    assert all(r["error"] is None for r in records), records
    assert shell.user_ns["PROFILE"] == "full" and shell.user_ns["cfg"].time_budget_min == 0.5


def test_wheels_for_the_gpu_machine_have_the_project_pins():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE))
    normal = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    wheels = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "benchmarks" / "notebook_gpu_wheels.txt").read_text(),
                        re.MULTILINE)
    assert wheels and any(name == "ipython" for name, _ in wheels)
    for name, version in wheels:
        assert normal.get(re.sub(r"[-_.]+", "-", name).lower()) == version, (name, version)
