"""What this Python kernel has: Python, torch, CUDA and the GPU, and every package the kit uses.

On the course hub the notebook runs in the hub's own kernel, whose packages are the hub's, not the ones pinned
in requirements.txt. The notebook's first cell therefore calls `check_environment()`: it prints one table and,
when a *required* package is missing, stops there with the command that installs it, instead of failing deep
inside a later cell. *Optional* packages only improve a figure or the progress display: without them the kit
goes on and says what it does instead (`optional_import` prints that note, once per package).

    from utils.environment import check_environment
    check_environment()          # prints the table; raises EnvironmentCheckError if a required package is missing

Install commands take their versions from requirements.txt, the one place where versions are pinned. This
module imports only the standard library when it is imported (torch and the packages are imported by the
check itself), so that the first cell works whatever the kernel lacks.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import platform
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
HUB_REQUIREMENTS = ROOT / "requirements-hub.txt"
TESTED_PYTHON = "3.11"
# The oldest versions the kit supports: `make compat` runs the course grader's sequence on the shipped submission
# with them (requirements-compat.txt); the rest of the kit is tested with Python 3.11 and requirements.txt's pins.
MINIMUM_VERSIONS = {"python": "3.10", "torch": "2.0", "torchvision": "0.15"}
# A shared GPU: below this fraction of free memory, say that other processes hold the rest.
LOW_FREE_MEMORY_FRACTION = 0.5


@dataclass(frozen=True)
class Package:
    """module: the import name; dist: the name in requirements.txt and on PyPI; required: the notebook
    cannot run without it; role: what it is needed for (required) or what the kit does without it (optional)."""
    module: str
    dist: str
    required: bool
    role: str


PACKAGES = (
    Package("torch", "torch", True, "the model, training and feature extraction"),
    Package("torchvision", "torchvision", True, "the course's ToTensor transform and dataset class"),
    Package("numpy", "numpy", True, "arrays and the .npz data files"),
    Package("safetensors", "safetensors", True, "saving and loading the weights the grader reads"),
    Package("sklearn", "scikit-learn", True, "the grader's k-NN and linear probes, t-SNE"),
    Package("matplotlib", "matplotlib", True, "every figure"),
    Package("umap", "umap-learn", False, "the embeddings figure shows t-SNE only"),
    Package("seaborn", "seaborn", False, "the confusion figure is drawn with plain matplotlib"),
    Package("ipywidgets", "ipywidgets", False, "the neighbour explorer is a static figure"),
    Package("tqdm", "tqdm", False, "progress is a plain printed line every few seconds"),
)
PACKAGES_BY_MODULE = {p.module: p for p in PACKAGES}


class EnvironmentCheckError(RuntimeError):
    """A required package is missing or broken; the message names it and the command that installs it."""


# ----------------------------------------------------------------------------------------------------------
# Pinned versions and install commands (requirements.txt is the one source)

def normalise(dist: str) -> str:
    """PyPI's name normalisation (PEP 503): 'Scikit_Learn' -> 'scikit-learn'."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def pinned_versions(path: Path = REQUIREMENTS) -> dict[str, str]:
    """{normalised distribution name: version} of the `name==version` lines of a requirements file."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            pins[normalise(name)] = version
    return pins


def install_command(dist: str, path: Path = REQUIREMENTS) -> str:
    """The notebook command that installs the pinned version of `dist` into the user site of the kernel:
    '%pip install --user umap-learn==0.5.12'."""
    version = pinned_versions(path).get(normalise(dist))
    if version is None:
        raise ValueError(f"{path}: expected a pinned line '{dist}==<version>', found none; add one.")
    return f"%pip install --user {dist}=={version}"


# ----------------------------------------------------------------------------------------------------------
# Optional imports, announced

_announced: set[str] = set()     # packages whose absence was already announced in this process


def try_import(module: str):
    """(module, "") when `module` imports, else (None, "ErrorType: message"). Any exception counts as missing:
    a broken install (e.g. umap with an incompatible numba) must not stop the notebook either."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)   # umap: "Tensorflow not installed; ParametricUMAP ..."
            return importlib.import_module(module), ""
    except Exception as error:   # noqa: BLE001 - reported to the user, never swallowed silently
        return None, f"{type(error).__name__}: {error}"


def missing_note(module: str, reason: str) -> str:
    """'note: umap-learn cannot be imported (ModuleNotFoundError: ...): the embeddings figure shows t-SNE only.
    To have it: %pip install --user umap-learn==0.5.12, then restart the kernel.'"""
    package = PACKAGES_BY_MODULE[module.split(".")[0]]
    return (f"note: {package.dist} cannot be imported ({reason}): {package.role}. To have it: "
            f"{install_command(package.dist)}, then restart the kernel.")


def optional_import(module: str):
    """Import a module of an optional package (PACKAGES); None when it cannot be imported, after printing
    (once per package and process) what the kit does without it and the command that installs it."""
    imported, reason = try_import(module)
    top = module.split(".")[0]
    if imported is None and top not in _announced:
        _announced.add(top)
        print(missing_note(module, reason), flush=True)
    return imported


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter (ZMQ) kernel: a notebook, where outputs redraw in place and widgets can show.
    Does not import IPython: if nothing imported it, this is not a kernel."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


# ----------------------------------------------------------------------------------------------------------
# The check

@dataclass
class PackageStatus:
    """One package as found in this kernel: version None when it cannot be imported (error says why)."""
    package: Package
    version: str | None
    pinned: str | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.version is not None

    def line(self) -> str:
        name = f"{self.package.dist:13s}"
        if self.ok:
            tested = "" if self.version == self.pinned or self.pinned is None else f"  (tested with {self.pinned})"
            return f"  {name} {self.version}{tested}"
        verdict = (f"REQUIRED, cannot go on ({self.package.role})" if self.package.required
                   else f"can go on: {self.package.role}")
        return f"  {name} MISSING, {verdict}. Install: {install_command(self.package.dist)}"


@dataclass
class EnvironmentReport:
    """What check_environment found: Python, torch and the GPU(s) as text, and each package's status."""
    python: str
    torch: str
    gpus: list[str]
    packages: list[PackageStatus]

    @property
    def missing_required(self) -> list[PackageStatus]:
        return [s for s in self.packages if s.package.required and not s.ok]

    @property
    def missing_optional(self) -> list[PackageStatus]:
        return [s for s in self.packages if not s.package.required and not s.ok]

    def lines(self) -> list[str]:
        lines = ["Environment of this kernel", f"  Python        {self.python}", f"  torch         {self.torch}"]
        lines += [f"  GPU           {gpu}" for gpu in self.gpus]
        lines += ["Packages (version found; versions differing from requirements.txt are flagged)"]
        lines += [status.line() for status in self.packages]
        if self.missing_optional and not self.missing_required:
            lines.append(f"The notebook can go on without the {len(self.missing_optional)} missing optional "
                         f"package(s). To install all of them at once: %pip install --user -r "
                         f"{HUB_REQUIREMENTS.name}, then restart the kernel and run all cells again.")
        return lines


def package_status(package: Package, pins: dict[str, str]) -> PackageStatus:
    """Import the package (a truthful check: a broken install shows up here) and read its version."""
    imported, error = try_import(package.module)
    pinned = pins.get(normalise(package.dist))
    if imported is None:
        return PackageStatus(package, None, pinned, error)
    try:
        version = importlib.metadata.version(package.dist)
    except importlib.metadata.PackageNotFoundError:   # imported but not installed by pip (e.g. a source tree)
        version = str(getattr(imported, "__version__", "unknown version"))
    return PackageStatus(package, version, pinned)


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1); stops at the first part that is not a number."""
    numbers = []
    for part in re.split(r"[.+]", version):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def below_minimum(version: str, name: str) -> bool:
    """True when `version` of `name` (a MINIMUM_VERSIONS key) is older than the kit's minimum."""
    return version_tuple(version) < version_tuple(MINIMUM_VERSIONS[name])


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_torch() -> tuple[str, list[str]]:
    """('2.14.1+cu130, built for CUDA 13.0, CUDA available', ['NVIDIA H200: 139.8 GiB total, 138.9 GiB free'])."""
    torch, error = try_import("torch")
    if torch is None:
        return f"cannot be imported ({error})", ["unknown (torch missing)"]
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    if not torch.cuda.is_available():
        return (f"{torch.__version__}, {built}, no CUDA device",
                ["none: training runs on the CPU (the short profile, unless CS461_PROFILE says otherwise)"])
    gpus = []
    for index in range(torch.cuda.device_count()):
        name = torch.cuda.get_device_name(index)
        try:
            free, total = torch.cuda.mem_get_info(index)
        except RuntimeError as error:   # e.g. a GPU in exclusive mode held by another process
            gpus.append(f"{name}: memory cannot be queried ({error})")
            continue
        text = f"{name}: {total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free"
        if free < LOW_FREE_MEMORY_FRACTION * total:
            text += (f" (other processes hold {(total - free) / 2**30:.1f} GiB: if training runs out of memory, "
                     f"lower batch_size as the error message says)")
        gpus.append(text)
    return f"{torch.__version__}, {built}, CUDA available", gpus


def check_environment(echo: bool = True, strict: bool = True) -> EnvironmentReport:
    """Check this kernel: Python, torch, the GPU with its total and free memory, and every package in
    PACKAGES with its version. Prints the table when `echo`. With `strict`, raises EnvironmentCheckError
    (after printing) when a required package is missing, naming the command that installs each."""
    pins = pinned_versions()
    python = f"{platform.python_version()} ({sys.executable})"
    if below_minimum(platform.python_version(), "python"):
        python += f"; BELOW the kit's minimum, Python {MINIMUM_VERSIONS['python']}"
    elif not platform.python_version().startswith(TESTED_PYTHON + "."):
        python += f"; the kit is tested with Python {TESTED_PYTHON} (minimum {MINIMUM_VERSIONS['python']})"
    torch_text, gpus = describe_torch()
    for name in ("torch", "torchvision"):
        version = installed_version(name)
        if version and below_minimum(version, name):
            torch_text += f"; {name} {version} is BELOW the kit's minimum, {name} {MINIMUM_VERSIONS[name]}"
    report = EnvironmentReport(python, torch_text, gpus, [package_status(p, pins) for p in PACKAGES])
    if echo:
        print("\n".join(report.lines()), flush=True)
    missing = report.missing_required
    if strict and missing:
        commands = "\n".join(f"  {install_command(s.package.dist)}    ({s.error})" for s in missing)
        raise EnvironmentCheckError(
            f"this kernel lacks {len(missing)} required package(s): "
            f"{', '.join(s.package.dist for s in missing)}. Run in a new cell:\n{commands}\n"
            f"then restart the kernel (Kernel > Restart Kernel) and run all cells again.")
    return report
