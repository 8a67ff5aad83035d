"""What this Python kernel has: Python, torch, CUDA and the GPU, and every package the kit uses.

On the course hub the notebook runs in the hub's own kernel, whose packages are the hub's, not the ones pinned
in requirements.txt. The notebook's first cell therefore calls `check_environment()`: it prints one table and,
when a *required* package is missing, stops there with the command that installs it, instead of failing deep
inside a later cell. *Optional* packages only improve a figure or the progress display: without them the kit
goes on and says what it does instead (`optional_import` prints that note, once per package).

    from utils.environment import check_environment
    check_environment()          # prints the table; raises EnvironmentCheckError if a required package is missing
                                 # or installed but fails to import

A package can be absent (pip never installed it: the table gives the command that installs it) or installed but
failing to import: usually a compiled package built for another numpy than the kernel's (seaborn failing inside
pandas, for instance). Installing the first package again cannot fix the second case, so the table names the
package at fault and a version of it tested with this kernel's numpy. The check also names the profiles the kit
is tested with (its own pins and two kernels built like the course hub's, PROFILES) and says when this kernel's
torch, numpy and scikit-learn match none of them.

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
import traceback
import warnings
from dataclasses import dataclass, field
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
class Profile:
    """A set of versions the kit is tested with. pins: a file pinning every package (name==version); python:
    the Python (major.minor) it is tested with. The hub profiles are built and run by `make hub`."""
    name: str
    pins: Path
    python: str


PROFILES = (
    Profile("kit", ROOT / "constraints.txt", TESTED_PYTHON),
    Profile("hub-2025", ROOT / "requirements-hub-2025.txt", "3.12"),
    Profile("hub-2026", ROOT / "requirements-hub-2026.txt", "3.12"),
)
# What decides whether a kernel matches a profile: these packages' major.minor versions.
PROFILE_KEYS = ("torch", "numpy", "scikit-learn")


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
    """A required package is missing or fails to import; the message names it and what to do."""


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
# Imports: a package absent, or installed but failing to import

_announced: set[str] = set()     # packages whose absence was already announced in this process


@dataclass(frozen=True)
class ImportFailure:
    """Why a module could not be imported. reason: the error's type and last line. installed: the version of
    its distribution that pip installed, None when the package is absent (Python finds no such module).
    culprit: when installed, the distribution at fault: the one whose code raised (pandas when seaborn fails
    inside pandas, the package itself when its own code raised) or a dependency that is absent."""
    module: str
    dist: str
    reason: str
    installed: str | None
    culprit: str | None = None

    @property
    def absent(self) -> bool:
        return self.installed is None


def _import(module: str):
    """(module, None) or (None, the exception). Any exception counts: a broken install (e.g. umap with an
    incompatible numba) must not stop the notebook when the package is optional."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)   # umap: "Tensorflow not installed; ParametricUMAP ..."
            return importlib.import_module(module), None
    except Exception as error:   # noqa: BLE001 - reported to the user, never swallowed silently
        return None, error


def error_line(error: BaseException) -> str:
    """'ValueError: numpy.dtype size changed, ...': the type and the last line of the message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def distribution_of(top_module: str) -> str | None:
    """The installed distribution that provides the top-level module ('sklearn' -> 'scikit-learn'), or None."""
    names = importlib.metadata.packages_distributions().get(top_module)
    return names[0] if names else None


def _top_module(filename: str) -> str | None:
    """The top-level module a source file belongs to, from the sys.path entry it lies under ('.../site-packages/
    pandas/_libs/__init__.py' -> 'pandas'); None for files outside sys.path (frozen modules, Cython sources)."""
    path = Path(filename)
    roots = [Path(entry) for entry in sys.path if entry and Path(entry).is_absolute()]
    under = [root for root in roots if path.is_relative_to(root) and path != root]
    if not under:
        return None
    first = path.relative_to(max(under, key=lambda root: len(root.parts))).parts[0]
    return first.split(".")[0]


def import_failure(module: str, error: BaseException) -> ImportFailure:
    """What went wrong when importing `module` (a module of a PACKAGES entry, or any module) raised `error`."""
    top = module.split(".")[0]
    dist = PACKAGES_BY_MODULE[top].dist if top in PACKAGES_BY_MODULE else top
    installed = installed_version(dist)
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == top:
        installed = None      # Python finds no such module, whatever metadata may be left behind
    if installed is None:
        return ImportFailure(module, dist, error_line(error), None)
    culprit = None
    if isinstance(error, ModuleNotFoundError) and error.name:     # one of its dependencies is absent
        dependency = error.name.split(".")[0]
        culprit = PACKAGES_BY_MODULE[dependency].dist if dependency in PACKAGES_BY_MODULE else dependency
    else:                                                         # the innermost frame in an installed package
        for frame in reversed(traceback.extract_tb(error.__traceback__)):
            top_module = _top_module(frame.filename)
            culprit = distribution_of(top_module) if top_module else None
            if culprit:
                break
    return ImportFailure(module, dist, error_line(error), installed, culprit or dist)


def try_import(module: str):
    """(module, "") when `module` imports, else (None, "ErrorType: last line of the message")."""
    imported, error = _import(module)
    return (imported, "") if error is None else (None, error_line(error))


def tested_version(dist: str) -> tuple[str, Profile] | None:
    """(version, profile): the version of `dist` pinned by the tested profile whose numpy is nearest this
    kernel's (same major version, nearest minor); None when no such profile pins it."""
    numpy = installed_version("numpy")
    if numpy is None:
        return None
    mine = version_tuple(numpy)[:2]
    candidates = []
    for profile in PROFILES:
        if not profile.pins.is_file():
            continue
        pins = pinned_versions(profile.pins)
        theirs = version_tuple(pins.get("numpy", ""))[:2]
        if normalise(dist) in pins and len(theirs) == 2 and len(mine) == 2 and theirs[0] == mine[0]:
            candidates.append((abs(theirs[1] - mine[1]), pins[normalise(dist)], profile))
    if not candidates:
        return None
    _, version, profile = min(candidates, key=lambda candidate: candidate[0])
    return version, profile


def repair_advice(failure: ImportFailure) -> str:
    """What to do about a package that is installed but fails to import: never the command that installs the
    package again (it is there), but one for the package at fault."""
    culprit = failure.culprit or failure.dist
    restart = "then restart the kernel (Kernel > Restart Kernel)"
    culprit_installed = installed_version(culprit)
    if culprit_installed is None:
        tested = tested_version(culprit)
        command = f'%pip install --user "{culprit}=={tested[0]}"' if tested else f'%pip install --user "{culprit}"'
        return f"Its dependency {culprit} is missing. To fix: {command}, {restart}."
    if normalise(culprit) == "numpy":
        return (f"numpy {culprit_installed} itself fails to import: a numpy installed into your user site "
                f"(~/.local) may hide the kernel's own. To fix: %pip uninstall -y numpy, {restart}.")
    inside = "" if normalise(culprit) == normalise(failure.dist) else f"The error is raised inside {culprit}. "
    numpy = installed_version("numpy")
    cause = (f"{inside}The usual cause: {culprit} {culprit_installed} was built for another numpy than this "
             f"kernel's numpy {numpy}.")
    tested = tested_version(culprit)
    if tested is None:
        return f'{cause} To fix: %pip install --user --upgrade "{culprit}", {restart}.'
    version, profile = tested
    if version == culprit_installed:       # the version tested with this numpy: a damaged install
        return (f"{inside}{culprit} {culprit_installed} is the version tested with this kernel's numpy {numpy}, so "
                f'its files may be damaged. To fix: %pip install --user --force-reinstall --no-deps '
                f'"{culprit}=={version}", {restart}.')
    return (f'{cause} To fix: %pip install --user "{culprit}=={version}" (the version tested with numpy '
            f'{pinned_versions(profile.pins)["numpy"]}, profile {profile.name}), {restart}.')


def missing_note(failure: ImportFailure) -> str:
    """'note: umap-learn cannot be imported (ModuleNotFoundError: ...): the embeddings figure shows t-SNE only.
    To have it: %pip install --user umap-learn==0.5.12, then restart the kernel.' For a package that is
    installed but fails to import: what is at fault and what to do instead."""
    package = PACKAGES_BY_MODULE[failure.module.split(".")[0]]
    if failure.absent:
        return (f"note: {package.dist} cannot be imported ({failure.reason}): {package.role}. To have it: "
                f"{install_command(package.dist)}, then restart the kernel.")
    return (f"note: {package.dist} cannot be imported ({failure.reason}): it is installed ({failure.installed}) "
            f"but fails to import, so {package.role.lower()}. {repair_advice(failure)}")


def optional_import(module: str):
    """Import a module of an optional package (PACKAGES); None when it cannot be imported, after printing
    (once per package and process) what the kit does without it and what to do about it."""
    imported, error = _import(module)
    top = module.split(".")[0]
    if imported is None and top not in _announced:
        _announced.add(top)
        print(missing_note(import_failure(module, error)), flush=True)
    return imported


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter (ZMQ) kernel: a notebook, where outputs redraw in place and widgets can show.
    Does not import IPython: if nothing imported it, this is not a kernel."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


# ----------------------------------------------------------------------------------------------------------
# Tested profiles

def matching_profile(versions: dict[str, str | None]) -> Profile | None:
    """The first profile whose torch, numpy and scikit-learn have the major.minor versions in `versions`."""
    for profile in PROFILES:
        if not profile.pins.is_file():
            continue
        pins = pinned_versions(profile.pins)
        if all(versions.get(key) and pins.get(key) and
               version_tuple(versions[key])[:2] == version_tuple(pins[key])[:2] for key in PROFILE_KEYS):
            return profile
    return None


def profile_lines(versions: dict[str, str | None]) -> list[str]:
    """The tested profiles, and whether this kernel's torch, numpy and scikit-learn match one of them."""
    lines = [f"Tested profiles ({', '.join(PROFILE_KEYS)} decide which one a kernel matches; `make hub` runs "
             f"the hub ones)"]
    for profile in PROFILES:
        if profile.pins.is_file():
            pins = pinned_versions(profile.pins)
            keys = ", ".join(f"{key} {pins.get(key, '?')}" for key in PROFILE_KEYS)
            lines.append(f"  {profile.name:13s} Python {profile.python}, {keys} ({profile.pins.name})")
    if not all(versions.get(key) for key in PROFILE_KEYS):
        return lines          # a missing package is reported above; there is nothing to compare
    found = ", ".join(f"{key} {versions[key]}" for key in PROFILE_KEYS)
    match = matching_profile(versions)
    if match is not None:
        lines.append(f"This kernel's {found} match the profile {match.name}.")
    else:
        lines.append(f"note: this kernel's {found} match none of the tested profiles (compared by major.minor "
                     f"version). Not an error: the kit may well work, but this combination is untested.")
    return lines


# ----------------------------------------------------------------------------------------------------------
# The check

@dataclass
class PackageStatus:
    """One package as found in this kernel: version None when it cannot be imported (failure says why and
    whether it is absent or installed but failing)."""
    package: Package
    version: str | None
    pinned: str | None
    failure: ImportFailure | None = None

    @property
    def ok(self) -> bool:
        return self.version is not None

    @property
    def absent(self) -> bool:
        return self.failure is not None and self.failure.absent

    @property
    def broken(self) -> bool:
        """Installed, but its import raises."""
        return self.failure is not None and not self.failure.absent

    @property
    def error(self) -> str:
        return self.failure.reason if self.failure else ""

    def line(self) -> str:
        name = f"{self.package.dist:13s}"
        if self.ok:
            tested = "" if self.version == self.pinned or self.pinned is None else f"  (tested with {self.pinned})"
            return f"  {name} {self.version}{tested}"
        verdict = (f"REQUIRED, cannot go on ({self.package.role})" if self.package.required
                   else f"can go on: {self.package.role}")
        if self.broken:
            return (f"  {name} {self.failure.installed} INSTALLED BUT FAILS TO IMPORT ({self.failure.reason}); "
                    f"{verdict}. {repair_advice(self.failure)}")
        return f"  {name} MISSING, {verdict}. Install: {install_command(self.package.dist)}"


@dataclass
class EnvironmentReport:
    """What check_environment found: Python, torch and the GPU(s) as text, each package's status, and the
    tested profiles with the one this kernel matches (None: none)."""
    python: str
    torch: str
    gpus: list[str]
    packages: list[PackageStatus]
    profiles: list[str] = field(default_factory=list)
    profile: str | None = None
    pins_file: str = REQUIREMENTS.name

    @property
    def missing_required(self) -> list[PackageStatus]:
        """Required packages that cannot be imported: absent or broken."""
        return [s for s in self.packages if s.package.required and not s.ok]

    @property
    def missing_optional(self) -> list[PackageStatus]:
        """Optional packages that cannot be imported: absent or broken."""
        return [s for s in self.packages if not s.package.required and not s.ok]

    def lines(self) -> list[str]:
        lines = ["Environment of this kernel", f"  Python        {self.python}", f"  torch         {self.torch}"]
        lines += [f"  GPU           {gpu}" for gpu in self.gpus]
        lines += [f"Packages (version found; versions differing from {self.pins_file} are flagged)"]
        lines += [status.line() for status in self.packages]
        absent = [s for s in self.missing_optional if s.absent]
        if absent and not self.missing_required:
            lines.append(f"The notebook can go on without the {len(absent)} missing optional "
                         f"package(s). To install all of them at once: %pip install --user -r "
                         f"{HUB_REQUIREMENTS.name}, then restart the kernel and run all cells again.")
        return lines + self.profiles


def package_status(package: Package, pins: dict[str, str]) -> PackageStatus:
    """Import the package (a truthful check: a broken install shows up here) and read its version."""
    imported, error = _import(package.module)
    pinned = pins.get(normalise(package.dist))
    if imported is None:
        return PackageStatus(package, None, pinned, import_failure(package.module, error))
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
    """Check this kernel: Python, torch, the GPU with its total and free memory, every package in PACKAGES with
    its version, and the tested profile it matches. Prints the table when `echo`. With `strict`, raises
    EnvironmentCheckError (after printing) when a required package is missing (naming the command that installs
    it) or installed but failing to import (naming the package at fault and what to do)."""
    versions = {key: installed_version(key) for key in PROFILE_KEYS}
    match = matching_profile(versions)
    pins_path = match.pins if match is not None else REQUIREMENTS   # versions compared with the matched profile
    pins = pinned_versions(pins_path)
    python = f"{platform.python_version()} ({sys.executable})"
    tested_pythons = sorted({profile.python for profile in PROFILES})
    if below_minimum(platform.python_version(), "python"):
        python += f"; BELOW the kit's minimum, Python {MINIMUM_VERSIONS['python']}"
    elif not any(platform.python_version().startswith(version + ".") for version in tested_pythons):
        python += (f"; the kit is tested with Python {' and '.join(tested_pythons)} "
                   f"(minimum {MINIMUM_VERSIONS['python']})")
    torch_text, gpus = describe_torch()
    for name in ("torch", "torchvision"):
        version = installed_version(name)
        if version and below_minimum(version, name):
            torch_text += f"; {name} {version} is BELOW the kit's minimum, {name} {MINIMUM_VERSIONS[name]}"
    report = EnvironmentReport(python, torch_text, gpus, [package_status(p, pins) for p in PACKAGES],
                               profiles=profile_lines(versions), profile=match.name if match else None,
                               pins_file=pins_path.name)
    if echo:
        print("\n".join(report.lines()), flush=True)
    missing = report.missing_required
    if strict and missing:
        parts = []
        absent = [s for s in missing if s.absent]
        if absent:
            commands = "\n".join(f"  {install_command(s.package.dist)}    ({s.error})" for s in absent)
            parts.append(f"this kernel lacks {len(absent)} required package(s): "
                         f"{', '.join(s.package.dist for s in absent)}. Run in a new cell:\n{commands}\n"
                         f"then restart the kernel (Kernel > Restart Kernel) and run all cells again.")
        for s in missing:
            if s.broken:
                parts.append(f"{s.package.dist} {s.failure.installed} is installed but fails to import "
                             f"({s.error}); the notebook cannot go on without it. {repair_advice(s.failure)}")
        raise EnvironmentCheckError("\n".join(parts))
    return report
