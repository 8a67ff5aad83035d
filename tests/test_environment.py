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


# ----------------------------------------------------------------------------------------------------------
# Installed but failing to import, and the tested profiles

@pytest.fixture
def modules_restored():
    """sys.modules exactly as before the test: a failed import leaves half-imported modules behind."""
    saved = dict(sys.modules)
    yield
    sys.modules.clear()
    sys.modules.update(saved)


def fail_inside(tmp_path, monkeypatch, culprit: str, message: str, *dependents: str):
    """A package `culprit` whose import raises ValueError(message), found first on sys.path, with it and every
    `dependents` module forgotten so that importing them runs into it (as a pandas built for another numpy
    breaks `import seaborn`)."""
    (tmp_path / culprit).mkdir()
    (tmp_path / culprit / "__init__.py").write_text(f"raise ValueError({message!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in (culprit, *dependents)]:
        del sys.modules[name]


def pretend_installed(monkeypatch, **versions):
    """installed_version() answers these versions (dist names with _ for -), the real ones otherwise."""
    real = environment.installed_version
    monkeypatch.setattr(environment, "installed_version",
                        lambda dist: versions.get(dist.replace("-", "_"), real(dist)))


ABI_ERROR = ("numpy.dtype size changed, may indicate binary incompatibility.\n"
             "Expected 96 from C header, got 88 from PyObject")


def test_an_optional_package_failing_inside_its_dependency_names_the_dependency_and_goes_on(
        tmp_path, monkeypatch, capsys, modules_restored, fresh_notes):
    fail_inside(tmp_path, monkeypatch, "pandas", ABI_ERROR, "seaborn")
    pretend_installed(monkeypatch, pandas="2.0.3")
    report = check_environment()                       # optional: no exception
    seaborn = next(s for s in report.packages if s.package.dist == "seaborn")
    assert seaborn.broken and not seaborn.absent and seaborn.failure.culprit == "pandas"
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("seaborn"))
    tested = pin("pandas", ROOT / "constraints.txt")   # the kit's profile: this venv's numpy
    assert f"{pin('seaborn')} INSTALLED BUT FAILS TO IMPORT (ValueError: Expected 96 from C header" in line
    assert "can go on: the confusion figure is drawn with plain matplotlib" in line
    assert "pandas 2.0.3 was built for another numpy" in line
    assert f'%pip install --user "pandas=={tested}"' in line
    assert "MISSING" not in line and "install --user seaborn" not in line   # seaborn is there: no reinstall

    assert environment.optional_import("seaborn") is None   # where the kit uses it: the same advice, once
    note = capsys.readouterr().out
    assert note.startswith("note: seaborn cannot be imported (ValueError: Expected 96 from C header")
    assert f'%pip install --user "pandas=={tested}"' in note and "install --user seaborn" not in note


def test_a_required_package_failing_to_import_stops_with_what_to_do(tmp_path, monkeypatch, capsys,
                                                                     modules_restored):
    fail_inside(tmp_path, monkeypatch, "scipy", ABI_ERROR, "sklearn")
    pretend_installed(monkeypatch, scipy="1.11.4")
    with pytest.raises(EnvironmentCheckError) as raised:
        check_environment()
    message = str(raised.value)
    assert message.startswith(f"scikit-learn {pin('scikit-learn')} is installed but fails to import "
                              f"(ValueError: Expected 96 from C header, got 88 from PyObject)")
    assert "The error is raised inside scipy. The usual cause: scipy 1.11.4 was built for another numpy" in message
    assert f'%pip install --user "scipy=={pin("scipy", ROOT / "constraints.txt")}"' in message
    assert "restart the kernel" in message and "install --user scikit-learn" not in message
    assert "lacks" not in message                      # nothing is absent
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("scikit-learn"))
    assert "INSTALLED BUT FAILS TO IMPORT" in line and "REQUIRED, cannot go on" in line


def test_a_broken_package_of_the_right_version_is_reinstalled_as_it_is(tmp_path, monkeypatch, capsys,
                                                                       modules_restored, fresh_notes):
    fail_inside(tmp_path, monkeypatch, "tqdm", "cannot load the extension")
    assert environment.optional_import("tqdm") is None
    assert (f'%pip install --user --force-reinstall --no-deps "tqdm=={pin("tqdm", ROOT / "constraints.txt")}"'
            in capsys.readouterr().out)


def test_the_tested_profiles_are_named_and_a_kernel_matching_none_is_a_note(monkeypatch, capsys):
    report = check_environment()
    printed = capsys.readouterr().out
    assert report.profile == "kit" and "match the profile kit" in printed
    for profile in environment.PROFILES:
        pins = environment.pinned_versions(profile.pins)
        assert (f"  {profile.name:13s} Python {profile.python}, torch {pins['torch']}, numpy {pins['numpy']}, "
                f"scikit-learn {pins['scikit-learn']} ({profile.pins.name})") in printed

    pretend_installed(monkeypatch, torch="2.4.1", numpy="1.26.4", scikit_learn="1.5.2")
    report = check_environment()                       # a note, not an error
    assert report.profile is None
    assert ("note: this kernel's torch 2.4.1, numpy 1.26.4, scikit-learn 1.5.2 match none of the tested profiles"
            in capsys.readouterr().out)


def test_a_kernel_is_matched_to_a_profile_by_major_minor_versions():
    match = environment.matching_profile
    assert match({"torch": "2.5.1+cu121", "numpy": "1.26.0", "scikit-learn": "1.6.0"}).name == "hub-2025"
    assert match({"torch": "2.6.0", "numpy": "2.3.1", "scikit-learn": "1.7.2"}).name == "hub-2026"
    assert match({"torch": "2.6.0", "numpy": "1.26.4", "scikit-learn": "1.7.2"}) is None
    assert match({"torch": None, "numpy": "1.26.4", "scikit-learn": "1.6.1"}) is None


@pytest.mark.parametrize("name, expected", [
    ("hub-2025", {"torch": "2.5.1", "torchvision": "0.20.1", "numpy": "1.26.4", "scikit-learn": "1.6.1",
                  "scikit-learn-intelex": "2025.10.0", "ipywidgets": "8.1.5"}),
    ("hub-2026", {"torch": "2.6.0", "torchvision": "0.21.0", "numpy": "2.3.5", "scikit-learn": "1.7.2",
                  "scikit-learn-intelex": "2025.10.0"}),
])
def test_hub_profiles_pin_every_package(name, expected):
    """Each hub profile pins the whole set (pip freeze): every line a name==version, every package the kit uses
    and what `make hub` runs (the notebook's kernel and nbclient) among them."""
    profile = next(p for p in environment.PROFILES if p.name == name)
    lines = [line.strip() for line in profile.pins.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line) for line in lines), lines
    pins = environment.pinned_versions(profile.pins)
    assert len(pins) == len(lines)                     # each package once
    assert {key: pins.get(key) for key in expected} == expected
    needed = {p.dist for p in environment.PACKAGES} | {"pandas", "ipykernel", "nbclient", "nbformat", "nbconvert",
                                                       "daal", "scipy", "numba", "jupyter-client", "pyzmq"}
    assert needed <= set(pins), needed - set(pins)
