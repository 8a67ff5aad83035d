"""The environment check of the notebook's first cell: what it reports for missing required and optional
packages (each with its exact install command, versions read from requirements.txt), the GPU's free memory,
and that `import utils` stays light enough to run it in a kernel that lacks torch."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils import environment
from utils.environment import EnvironmentCheckError, check_environment

ROOT = Path(__file__).resolve().parents[1]


def pin(dist: str, path: Path = ROOT / "requirements.txt") -> str:
    """The version pinned for `dist` in a requirements file, read independently of the module under test."""
    match = re.search(rf"^{re.escape(dist)}==(\S+)", path.read_text(), flags=re.MULTILINE)
    assert match, f"{path.name} has no pin for {dist}"
    return match.group(1)


@pytest.fixture
def fresh_notes(monkeypatch):
    """Each test starts with no absence announced yet (optional_import announces once per process)."""
    monkeypatch.setattr(environment, "_announced", set())


def block(monkeypatch, *modules):
    """Make `import module` raise ImportError, as in a kernel without the package."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_install_command_reads_the_pin_from_the_requirements_file(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nUmap_Learn==0.5.12  # trailing comment\nnumpy>=2\n")
    assert environment.install_command("umap-learn", requirements) == "%pip install --user umap-learn==0.5.12"
    with pytest.raises(ValueError, match=r"requirements.txt: expected a pinned line 'numpy==<version>'"):
        environment.install_command("numpy", requirements)


def test_every_package_has_a_pin_in_requirements():
    for package in environment.PACKAGES:
        assert environment.install_command(package.dist) == f"%pip install --user {package.dist}=={pin(package.dist)}"


def test_hub_requirements_agree_with_requirements_and_hold_every_optional_package():
    hub = ROOT / "requirements-hub.txt"
    pins = environment.pinned_versions(hub)
    assert pins == {name: pin(name) for name in pins}, "requirements-hub.txt pins differ from requirements.txt"
    assert {p.dist for p in environment.PACKAGES if not p.required} <= set(pins)
    assert "torch" not in pins   # the hub's own CUDA build must not be shadowed


def test_missing_required_package_prints_its_install_line_and_raises(monkeypatch, capsys):
    block(monkeypatch, "safetensors")
    command = f"%pip install --user safetensors=={pin('safetensors')}"
    with pytest.raises(EnvironmentCheckError, match=re.escape(command)) as raised:
        check_environment()
    assert "restart the kernel" in str(raised.value)
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.strip().startswith("safetensors"))
    assert "MISSING, REQUIRED, cannot go on" in line and line.endswith(command)


def test_missing_optional_packages_are_reported_as_can_go_on(monkeypatch, capsys):
    block(monkeypatch, "umap", "tqdm")
    report = check_environment()   # no exception: the notebook can go on
    assert [s.package.dist for s in report.missing_optional] == ["umap-learn", "tqdm"]
    assert report.missing_required == []
    printed = capsys.readouterr().out
    assert (f"umap-learn    MISSING, can go on: the embeddings figure shows t-SNE only. Install: "
            f"%pip install --user umap-learn=={pin('umap-learn')}") in printed
    assert "tqdm          MISSING, can go on: progress is a plain printed line" in printed
    assert "%pip install --user -r requirements-hub.txt" in printed
    seaborn_line = next(line for line in printed.splitlines() if line.strip().startswith("seaborn"))
    assert "MISSING" not in seaborn_line


def test_report_names_python_torch_and_every_package(capsys):
    report = check_environment()
    printed = capsys.readouterr().out
    assert f"Python        {sys.version.split()[0]}" in printed
    assert f"torch         {torch.__version__}" in printed
    for package in environment.PACKAGES:
        assert re.search(rf"^  {re.escape(package.dist)} +\S", printed, flags=re.MULTILINE), package.dist
    assert all(s.ok for s in report.packages)   # the project's own environment has everything


def test_gpu_line_shows_total_and_free_memory_and_warns_when_others_hold_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Example GPU")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (10 * 2**30, 80 * 2**30))
    _, gpus = environment.describe_torch()
    assert gpus == ["Example GPU: 80.0 GiB total, 10.0 GiB free (other processes hold 70.0 GiB: if training runs "
                    "out of memory, lower batch_size as the error message says)"]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (79 * 2**30, 80 * 2**30))
    assert environment.describe_torch()[1] == ["Example GPU: 80.0 GiB total, 79.0 GiB free"]


def test_optional_import_announces_a_missing_package_once(monkeypatch, capsys, fresh_notes):
    block(monkeypatch, "seaborn")
    assert environment.optional_import("seaborn") is None
    assert environment.optional_import("seaborn") is None
    printed = capsys.readouterr().out
    assert printed.count("note: seaborn cannot be imported") == 1
    assert f"%pip install --user seaborn=={pin('seaborn')}, then restart the kernel" in printed


def test_a_broken_optional_package_counts_as_missing(monkeypatch, tmp_path, capsys, fresh_notes):
    (tmp_path / "tqdm").mkdir()
    (tmp_path / "tqdm" / "__init__.py").write_text("raise AttributeError('numpy has no attribute float')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "tqdm" or m.startswith("tqdm.")]:
        monkeypatch.delitem(sys.modules, name)
    assert environment.optional_import("tqdm") is None
    assert "note: tqdm cannot be imported (AttributeError: numpy has no attribute float)" in capsys.readouterr().out


def test_import_utils_and_the_check_module_stay_light():
    """The first cell imports utils.environment: it must not pull in torch or the training engine (a kernel
    without torch gets the table, not a traceback), while the course's names still import from utils."""
    code = ("import sys, utils, utils.environment\n"
            "heavy = [m for m in ('torch', 'sklearn', 'utils.train', 'utils.probes') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from utils import run_knn_probe, seed_all, ImageDatasetNPZ\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_minimum_versions_are_stated_and_compared():
    """The kit states its minimum Python, torch and torchvision (what `make compat` runs the grader's sequence
    with) and flags an older one in the first cell's table."""
    from utils import environment
    assert environment.MINIMUM_VERSIONS == {"python": "3.10", "torch": "2.0", "torchvision": "0.15"}
    compat = (ROOT / "requirements-compat.txt").read_text()
    assert "torch==2.0.0" in compat and "torchvision==0.15.1" in compat
    assert environment.version_tuple("2.14.1+cu130") == (2, 14, 1)
    assert environment.below_minimum("1.13.1", "torch") and not environment.below_minimum("2.0.0+cu117", "torch")
    assert environment.below_minimum("3.9.18", "python") and not environment.below_minimum("3.10.13", "python")
