"""The pre-submission check behind `python eval.py`, and the notebook's hand-in step.

`check_submission(folder)` does what the course's grader does to a submission folder, and more, so that a
student learns before the deadline what the grader would trip on:

1. structure: the folder and its four files; `models.py` self-contained (statically: its imports; for real:
   imported alone in a fresh interpreter, in a folder holding nothing but a copy of it, as the grader imports
   it beside its own utils.py); `ImageEncoder()` builds with no arguments and keeps the course's class
   variables; `final_model.safetensors` loads strictly; `get_features` gives finite (B, 1000) features; the
   notebook names its author; `report.md` stays within 500 words; the data files exist and are valid;
2. the grader's protocol, only when every structural check passed (otherwise the accuracies would be
   meaningless): raw `get_features` outputs of ToTensor images, batch 64; k-NN (k=5) and logistic-regression
   probes fit on train and scored on val (in-distribution), fit on 80% of ood and scored on the other 20%.

Every finding is a `Check` (pass / fail / warn) whose message says what is wrong, what was expected, what was
found, and whose `fix` says how to fix it. Nothing is ever substituted: missing data is a failure, never
random tensors.

`assemble_submission(folder, weights=...)` copies the four files into the submission folder (the notebook's
last section calls it). It refuses while the notebook's identity is still a placeholder, and makes the
copied models.py build the architecture the weights were trained with.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.checkpoint import atomic_write, weight_mismatches
from utils.data import (HUB_DATA_DIR, SPLIT_FILES, DataError, Split, find_split_file, load_npz, locate_data_dir,
                        ood_split, places_tried)
from utils.device import pick_device

# ----------------------------------------------------------------------------------------------------------
# What the course expects
# ----------------------------------------------------------------------------------------------------------

DEFAULT_SUBMISSION_DIR = "~/cs461_assignment1_submission"
MODELS_FILE = "models.py"
WEIGHTS_FILE = "final_model.safetensors"
NOTEBOOK_FILE = "CS461_Assignment1.ipynb"
REPORT_FILE = "report.md"
SUBMISSION_FILES = (MODELS_FILE, WEIGHTS_FILE, NOTEBOOK_FILE, REPORT_FILE)

COURSE_CLASS_VARIABLES = {"input_dim": 64, "input_channels": 3, "feature_dim": 1000, "proj_dim": 128}
MAX_REPORT_WORDS = 500
SHORT_REPORT_WORDS = 30
IDENTITY_NAMES = ("SCIPER", "LAST_NAME", "FIRST_NAME")
GRADER_BATCH_SIZE = 64
# Above this many training images, scikit-learn's lbfgs logistic regression on the CPU takes many minutes.
LARGE_TRAIN_FOR_CPU = 20_000

# The line of models.py that says what `ImageEncoder()` builds; assemble_submission rewrites it in the copy.
ARCH_LINE = re.compile(r'^ARCH = "([^"]*)"', re.MULTILINE)

# Modules models.py may import. The course says "torch and torchvision only"; the standard library is always
# there. numpy is installed wherever torch is, but it is outside what the course allows: a warning.
ALLOWED_MODULES = {"torch", "torchvision"}
TOLERATED_MODULES = {"numpy"}
NETWORK_MODULES = {"urllib", "urllib2", "urllib3", "requests", "http", "httpx", "socket", "ftplib", "aiohttp",
                   "wget", "huggingface_hub", "timm"}
DOWNLOAD_FUNCTIONS = {"load_state_dict_from_url", "download_url_to_file", "hf_hub_download", "from_pretrained"}
PRETRAINED_KEYWORDS = {"pretrained", "pretrained_backbone", "weights", "weights_backbone"}

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class SubmissionError(ValueError):
    """The submission cannot be assembled; the message says what is wrong and how to fix it."""


def expand_path(path: str | os.PathLike) -> Path:
    """A path with ~ and environment variables ($HOME) expanded."""
    return Path(os.path.expanduser(os.path.expandvars(str(path))))


# ----------------------------------------------------------------------------------------------------------
# Checks and the report
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Check:
    """One finding. status: "pass", "fail" or "warn". message: what was found (for a failure: what is wrong,
    what was expected, what was found). fix: how to fix it ("" when there is nothing to do)."""
    name: str
    status: str
    message: str = ""
    fix: str = ""

    def line(self) -> str:
        """"PASS name", "FAIL name: what is wrong — how to fix it", "WARN name: ..."."""
        text = f"{self.status.upper()} {self.name}"
        if self.message:
            text += f": {self.message}"
        if self.fix:
            text += f" — {self.fix}"
        return text

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "ok": self.status != "fail",
                "message": self.message, "fix": self.fix}


@dataclass
class Report:
    """Everything check_submission found: the checks in order, the four accuracies (percent), timings."""
    folder: str
    mode: str = "exact"                  # "exact" (scikit-learn, as the grader), "fast" (torch) or "quick"
    checks: list[Check] = field(default_factory=list)
    accuracies: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = ""
    data_dir: str | None = None
    probes_skipped: str = ""             # why the probes did not run ("" when they ran)
    echo: bool = True                    # print each check as it is made

    def add(self, name: str, status: str, message: str = "", fix: str = "") -> Check:
        check = Check(name, status, message, fix)
        self.checks.append(check)
        if self.echo:
            print(check.line(), flush=True)
        return check

    def passed(self, name: str, message: str = "") -> Check:
        return self.add(name, "pass", message)

    def failed(self, name: str, message: str, fix: str = "") -> Check:
        return self.add(name, "fail", message, fix)

    def warned(self, name: str, message: str, fix: str = "") -> Check:
        return self.add(name, "warn", message, fix)

    def note(self, text: str) -> None:
        """A line of information that is not a check."""
        if self.echo:
            print(text, flush=True)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return not self.failures

    def check(self, name: str) -> Check | None:
        """The last check with this name (None if it was not made)."""
        return next((c for c in reversed(self.checks) if c.name == name), None)

    def summary(self) -> str:
        """One line: "All 21 checks passed (1 warning)." or "2 checks failed: a, b"."""
        warned = len(self.warnings)
        warn_text = f" ({warned} warning{'s' if warned != 1 else ''})" if warned else ""
        if self.ok:
            return f"All {len(self.checks)} checks passed{warn_text}."
        names = ", ".join(c.name for c in self.failures)
        count = len(self.failures)
        return f"{count} check{'s' if count != 1 else ''} failed: {names}{warn_text}."

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "folder": self.folder,
            "mode": self.mode,
            "device": self.device,
            "data_dir": self.data_dir,
            "checks": [c.as_dict() for c in self.checks],
            "accuracies_percent": dict(self.accuracies),
            "probes_skipped": self.probes_skipped,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def format_percent(value: float) -> str:
    """36.1234 (a percentage) -> "36.12%". Accuracies in this module are always percentages."""
    return f"{value:.2f}%"


# ----------------------------------------------------------------------------------------------------------
# The whole check
# ----------------------------------------------------------------------------------------------------------

def check_submission(folder: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                     files: dict[str, str] | None = None, fast: bool = False, quick: bool = False,
                     batch_size: int = GRADER_BATCH_SIZE, progress: bool = True, echo: bool = True) -> Report:
    """Check a submission folder the way the grader uses it, then run the grader's protocol on it.

    data_dir: folder with the npz files (None: utils.data.locate_data_dir's order, the notebook's: $CS461_DATA_DIR,
    else the course hub's folder when it exists, else ./cs461_assignment1_data). files: {"train"/"val"/"ood": file name} overrides. fast: torch probes
    instead of scikit-learn. quick: structure checks only (data files found but not loaded, no probes).
    echo: print each check, and each probe's accuracy and time, as they come. progress: tqdm bars.
    Returns the Report; `report.ok` is True when no check failed.
    """
    folder = expand_path(folder)
    report = Report(folder=str(folder), mode="quick" if quick else ("fast" if fast else "exact"), echo=echo)
    device = pick_device("auto")           # as the grader: the GPU when there is one
    report.device = str(device)
    start = time.perf_counter()

    if not check_folder(report, folder):
        report.probes_skipped = "the submission folder does not exist"
        return report
    present = check_files(report, folder)

    model = None
    if MODELS_FILE in present:
        weights = folder / WEIGHTS_FILE if WEIGHTS_FILE in present else None
        model = check_model(report, folder / MODELS_FILE, weights, device)
    if NOTEBOOK_FILE in present:
        check_notebook(report, folder / NOTEBOOK_FILE)
    if REPORT_FILE in present:
        check_report(report, folder / REPORT_FILE)
    splits = check_data(report, data_dir, files, load=not quick)
    report.timings["structure checks"] = time.perf_counter() - start

    if quick:
        report.probes_skipped = "--quick: structure checks only"
        report.note("Probes not run (--quick: structure checks only).")
        return report
    if not report.ok or model is None or splits is None:
        count = len(report.failures)
        report.probes_skipped = (f"{count} structural check{'s' if count != 1 else ''} failed; the accuracies "
                                 f"would be meaningless until they are fixed")
        report.note(f"Probes not run: {report.probes_skipped}.")
        return report
    run_protocol(report, model, splits, fast=fast, batch_size=batch_size, progress=progress)
    return report


# ----------------------------------------------------------------------------------------------------------
# The folder and its files
# ----------------------------------------------------------------------------------------------------------

def check_folder(report: Report, folder: Path) -> bool:
    if folder.is_dir():
        report.passed("submission folder", str(folder))
        return True
    what = "is a file, not a folder" if folder.exists() else "does not exist"
    report.failed("submission folder", f"{folder} {what}; expected a folder holding {', '.join(SUBMISSION_FILES)}",
                  f"create it and copy the four files into it (the notebook's last section does this), or pass "
                  f"the right folder with --submission-folder/-i")
    return False


def check_files(report: Report, folder: Path) -> set[str]:
    """One check per required file; returns the names of those present."""
    present = set()
    for name in SUBMISSION_FILES:
        path = folder / name
        if path.is_file() and path.stat().st_size > 0:
            present.add(name)
            report.passed(f"file {name}", f"{path.stat().st_size:,} bytes")
        elif path.is_file():
            report.failed(f"file {name}", f"{path} is empty (0 bytes)", f"copy {name} into the folder again")
        else:
            others = sorted(p.name for p in folder.iterdir() if p.name.lower() == name.lower() or
                            p.suffix == Path(name).suffix)
            found = f"; files with that extension there: {', '.join(others)}" if others else ""
            report.failed(f"file {name}", f"{path} is missing{found}",
                          f"copy {name} into {folder} under exactly this name (the grader looks for it)")
    return present


# ----------------------------------------------------------------------------------------------------------
# models.py: imports, isolation, the class, the weights, get_features
# ----------------------------------------------------------------------------------------------------------

def check_model(report: Report, models_path: Path, weights_path: Path | None, device: torch.device):
    """All checks of models.py and the weights. Returns the model (eval mode, on `device`, weights loaded)
    when it is usable for the probes, else None."""
    built = load_encoder(report, models_path)
    if built is None:
        if weights_path is not None:   # still tell now whether the weights file itself is damaged
            check_weights_readable(report, weights_path)
        return None
    module, model = built
    usable = check_class_variables(report, module.ImageEncoder, model)
    if weights_path is not None:
        usable &= check_weights(report, model, weights_path, built_arch(module, model))
    else:
        usable = False
    model.to(device).eval()
    usable &= check_get_features(report, model, device)
    return model if usable else None


def load_encoder(report: Report, models_path: Path):
    """(module, ImageEncoder()) after the checks of models.py itself: syntax, imports (static, then for real
    in isolation), the class, the no-argument constructor. None (with the failed check) when one fails."""
    try:
        tree = ast.parse(models_path.read_text(encoding="utf-8"), filename=str(models_path))
    except (SyntaxError, UnicodeDecodeError) as error:
        report.failed("models.py syntax", f"{models_path} cannot be parsed: {type(error).__name__}: {error}",
                      "fix the syntax error (run `python -c \"import models\"` in the folder to see it)")
        return None
    check_imports(report, tree)
    check_no_pretrained(report, tree)
    if not check_isolated_import(report, models_path):
        return None
    module = import_in_process(report, models_path)
    if module is None:
        return None
    model = build_encoder(report, module)
    return None if model is None else (module, model)


def imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    """(module as written, line) for every import in the file, also inside functions. Relative imports
    keep their leading dots."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(("." * node.level + (node.module or ""), node.lineno))
    return sorted(found, key=lambda item: item[1])


def classify_import(module: str) -> str:
    """"ok", "tolerated" (numpy), "project" (utils, relative or a module of this project) or "foreign"."""
    root = module.split(".")[0]
    if module.startswith(".") or root == "utils":
        return "project"
    if root in ALLOWED_MODULES or root == "__future__" or root in sys.stdlib_module_names:
        return "ok"
    if root in TOLERATED_MODULES:
        return "tolerated"
    if (PROJECT_ROOT / f"{root}.py").is_file() or (PROJECT_ROOT / root).is_dir():
        return "project"
    return "foreign"


def check_imports(report: Report, tree: ast.AST) -> None:
    """Static check: models.py imports only torch, torchvision and the standard library."""
    verdicts = [(module, line, classify_import(module)) for module, line in imported_modules(tree)]
    project = [f"`{m}` (line {n})" for m, n, v in verdicts if v == "project"]
    foreign = [f"`{m}` (line {n})" for m, n, v in verdicts if v == "foreign"]
    tolerated = [f"`{m}` (line {n})" for m, n, v in verdicts if v == "tolerated"]
    if project:
        report.failed("models.py imports", f"imports project module(s) {', '.join(project)}; expected torch, "
                      f"torchvision and the standard library only. The grader puts its OWN utils.py beside "
                      f"models.py and nothing else from this project",
                      "copy what models.py needs into models.py itself and delete those imports")
    if foreign:
        report.failed("models.py imports", f"imports {', '.join(foreign)}, which the grader may not have; the "
                      f"course allows torch and torchvision only",
                      "rewrite that part with torch/torchvision and delete those imports")
    if tolerated and not (project or foreign):
        report.warned("models.py imports", f"imports {', '.join(tolerated)}; the course allows torch and "
                      f"torchvision only (numpy is usually installed with torch)", "prefer torch equivalents")
    if not (project or foreign or tolerated):
        modules = sorted({m.split(".")[0] for m, _, _ in verdicts if m != "__future__"})
        report.passed("models.py imports", f"{', '.join(modules) or 'nothing'} (torch, torchvision and the "
                      f"standard library only)")


def _dotted_name(node: ast.AST) -> str:
    """`torch.hub.load` for an Attribute/Name chain, "" for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _network_import(node: ast.Import | ast.ImportFrom) -> str:
    """"import requests" / "from torch.hub import load_state_dict_from_url" when the import reaches for the
    network or pre-trained weights, else ""."""
    if isinstance(node, ast.Import):
        risky = [a.name for a in node.names
                 if a.name.split(".")[0] in NETWORK_MODULES or a.name.startswith("torch.hub")]
        return f"import {', '.join(risky)}" if risky else ""
    module, names = node.module or "", [a.name for a in node.names]
    risky = (module.split(".")[0] in NETWORK_MODULES or module.startswith("torch.hub")
             or any(n in DOWNLOAD_FUNCTIONS for n in names) or (module == "torch" and "hub" in names))
    return f"from {module} import {', '.join(names)}" if risky else ""


def pretrained_or_network_uses(tree: ast.AST) -> list[str]:
    """Places where models.py may use pre-trained weights or the network, "line N: what", in line order."""
    found = []
    reported = set()   # nodes inside a name chain already reported (torch.hub inside torch.hub.load)
    for node in ast.walk(tree):   # breadth first: an outer chain comes before the chains inside it
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            text = _network_import(node)
            if text:
                found.append((node.lineno, text))
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                harmless = isinstance(keyword.value, ast.Constant) and keyword.value.value in (None, False)
                if keyword.arg in PRETRAINED_KEYWORDS and not harmless:
                    found.append((node.lineno, f"{keyword.arg}={ast.unparse(keyword.value)}"))
        elif isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in reported:
            name = _dotted_name(node)
            if name == "torch.hub" or name.startswith("torch.hub.") or name.split(".")[-1] in DOWNLOAD_FUNCTIONS:
                found.append((node.lineno, name))
                reported.update(id(inner) for inner in ast.walk(node))
    return [f"line {line}: {text}" for line, text in sorted(found, key=lambda item: item[0])]


def check_no_pretrained(report: Report, tree: ast.AST) -> None:
    uses = pretrained_or_network_uses(tree)
    if uses:
        report.warned("no pre-trained weights or downloads", f"models.py may load pre-trained weights or use the "
                      f"network: {'; '.join(uses)}. The course forbids pre-trained weights (training from "
                      f"scratch is verified) and the grader may have no network",
                      "build every module from scratch (weights=None, no torch.hub, no downloads)")
    else:
        report.passed("no pre-trained weights or downloads")


ISOLATED_IMPORT_SCRIPT = (
    "import sys\n"
    "sys.path.insert(0, '.')\n"   # python -I does not put the current folder on the path
    "import models\n"
)


# Results of isolated imports in this process, by the content of models.py: checking the same file again (the
# notebook's last section, the tests) does not pay for a fresh interpreter each time.
_isolated_import_results: dict[str, str | None] = {}


def isolated_import_error(models_path: Path, timeout_s: float = 300) -> str | None:
    """Import models.py in a fresh interpreter (`python -I`: no PYTHONPATH, no user site) whose current folder
    holds only a copy of it, so that nothing of this project is importable, as on the grader's side.
    Returns None when the import works, else the error (the last line of the traceback)."""
    source = models_path.read_bytes()
    key = hashlib.sha256(source).hexdigest()
    if key in _isolated_import_results:
        return _isolated_import_results[key]
    with tempfile.TemporaryDirectory(prefix="cs461_isolated_import_") as tmp:
        (Path(tmp) / MODELS_FILE).write_bytes(source)
        try:
            result = subprocess.run([sys.executable, "-I", "-c", ISOLATED_IMPORT_SCRIPT], cwd=tmp,
                                    capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return (f"a timeout: importing it took more than {timeout_s:.0f} s (models.py must not train, "
                    f"download or load data at import time)")
    if result.returncode == 0:
        error = None
    else:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit status {result.returncode}"
    _isolated_import_results[key] = error
    return error


def check_isolated_import(report: Report, models_path: Path) -> bool:
    error = isolated_import_error(models_path)
    if error is None:
        report.passed("models.py imports in isolation", "imported alone in a fresh `python -I` with nothing "
                      "of this project beside it")
        return True
    hint = ""
    if "No module named" in error:
        hint = " (the grader has its own utils.py and nothing else of this project beside models.py)"
    report.failed("models.py imports in isolation", f"importing models.py alone, in a folder holding only a "
                  f"copy of it, fails with {error}{hint}",
                  "make models.py self-contained: copy what it needs into it; import only torch and torchvision")
    return False


_import_counter = itertools.count()


def import_in_process(report: Report, models_path: Path):
    """models.py as a module under a unique name (never `models`, so the project's own models.py, if
    imported, is left alone). No __pycache__ is written into the submission folder."""
    name = f"_submitted_models_{next(_import_counter)}"
    spec = importlib.util.spec_from_file_location(name, models_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    was = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        report.failed("models.py imports in this process",
                      f"importing {models_path} raised {type(error).__name__}: {error}",
                      "run `python -c \"import models\"` in the submission folder and fix the error")
        return None
    finally:
        sys.dont_write_bytecode = was
    return module


def build_encoder(report: Report, module):
    """`ImageEncoder()` with no arguments, as the grader builds it (or None, with a failed check)."""
    cls = getattr(module, "ImageEncoder", None)
    if cls is None:
        report.failed("ImageEncoder exists", "models.py defines no `ImageEncoder`; the grader builds "
                      "`models.ImageEncoder()`", "keep the template's class name ImageEncoder")
        return None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        report.failed("ImageEncoder exists", f"ImageEncoder is a {type(cls).__name__}, expected a subclass of "
                      f"torch.nn.Module", "keep `class ImageEncoder(nn.Module)` from the template")
        return None
    report.passed("ImageEncoder exists")
    try:
        model = cls()
    except Exception as error:
        report.failed("ImageEncoder() builds", f"ImageEncoder() with no arguments raised {type(error).__name__}: "
                      f"{error}", "give every constructor argument a default: the grader calls ImageEncoder()")
        return None
    n_params = sum(p.numel() for p in model.parameters())
    report.passed("ImageEncoder() builds", f"{n_params:,} parameters" +
                  (f", arch {model.arch!r}" if isinstance(getattr(model, "arch", None), str) else ""))
    return model


def built_arch(module, model) -> str | None:
    """The architecture name ImageEncoder() builds: the instance's `arch`, else the module's ARCH."""
    arch = getattr(model, "arch", None)
    if isinstance(arch, str):
        return arch
    arch = getattr(module, "ARCH", None)
    return arch if isinstance(arch, str) else None


def check_class_variables(report: Report, cls, model) -> bool:
    """input_dim 64, input_channels 3, feature_dim 1000, proj_dim 128, on the class and on the instance."""
    wrong = []
    for name, expected in COURSE_CLASS_VARIABLES.items():
        for owner, where in ((cls, "class"), (model, "instance")):
            value = getattr(owner, name, "<missing>")
            if value != expected:
                wrong.append(f"{name} = {value!r} on the {where} (expected {expected})")
    if wrong:
        report.failed("class variables", "; ".join(dict.fromkeys(wrong)) + ". The grader relies on them",
                      "restore " + ", ".join(f"`{k} = {v}`" for k, v in COURSE_CLASS_VARIABLES.items()) +
                      " in class ImageEncoder; the course forbids changing them")
        return False
    report.passed("class variables", ", ".join(f"{k} {v}" for k, v in COURSE_CLASS_VARIABLES.items()))
    return True


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; raises whatever safetensors raises for a damaged file."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return load_file(str(path)), metadata


def weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file ({} when it has none)."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def _report_unreadable_weights(report: Report, path: Path, error: Exception) -> None:
    report.failed("weights load strictly", f"{path} is not a readable safetensors file ({type(error).__name__}: "
                  f"{str(error)[:200]}); it is probably truncated (an interrupted save or copy)",
                  "export the weights again (utils.checkpoint.export_weights or safetensors.torch.save_model) "
                  "and copy the file again")


def check_weights_readable(report: Report, path: Path) -> bool:
    """When models.py cannot be used, the weights cannot be matched against it; whether the file itself is
    intact can still be told."""
    try:
        weights, _ = read_weights(path)
    except Exception as error:
        _report_unreadable_weights(report, path, error)
        return False
    report.passed("weights file readable", f"{len(weights)} tensors (not matched against ImageEncoder(): "
                  f"models.py must work first)")
    return True


def check_weights(report: Report, model, path: Path, arch: str | None) -> bool:
    """Strict loading, as the grader does with safetensors.torch.load_model(model, path)."""
    from safetensors.torch import load_model
    name = "weights load strictly"
    try:
        weights, metadata = read_weights(path)
    except Exception as error:
        _report_unreadable_weights(report, path, error)
        return False
    weights_arch = metadata.get("arch")
    arch_note = ""
    if weights_arch and arch and weights_arch != arch:
        arch_note = (f"weights were trained with arch {weights_arch!r} but models.py builds {arch!r} "
                     f"(ARCH = \"{arch}\")")
    problems = weight_mismatches(model, weights)
    if problems:
        fix = (f"set ARCH = \"{weights_arch}\" in the submitted models.py (utils.submit.assemble_submission "
               f"does it), or submit weights of a {arch!r} model" if arch_note else
               "export the weights of an ImageEncoder() built by this very models.py (not a torch.compile or "
               "DataParallel wrapper, whose keys carry a prefix) with utils.checkpoint.export_weights")
        report.failed(name, (arch_note + ". " if arch_note else "") + f"{path.name} does not match "
                      f"ImageEncoder(): " + "; ".join(problems), fix)
        return False
    try:
        load_model(model, str(path), strict=True)   # exactly the grader's call
    except Exception as error:
        report.failed(name, f"safetensors.torch.load_model(ImageEncoder(), {path.name}) raised "
                      f"{type(error).__name__}: {str(error)[:300]}", "export the weights again with "
                      "utils.checkpoint.export_weights from an ImageEncoder() built by this models.py")
        return False
    if arch_note:
        report.warned(name, f"the {len(weights)} tensors load, but the metadata says: {arch_note}",
                      "check that the submitted weights are the ones you meant")
        return True
    report.passed(name, f"{len(weights)} tensors match ImageEncoder() exactly" +
                  (f" (arch {weights_arch!r})" if weights_arch else ""))
    return True


def check_get_features(report: Report, model, device: torch.device) -> bool:
    """get_features on ToTensor-like inputs (uniform in [0, 1]), one image and a batch of 64, and the grader's
    own check on randn(1, 3, 64, 64): shape (B, 1000), finite values."""
    generator = torch.Generator().manual_seed(0)
    cases = [
        ("get_features (1 image)", torch.rand(1, 3, 64, 64, generator=generator)),
        ("get_features (batch of 64)", torch.rand(64, 3, 64, 64, generator=generator)),
        ("get_features (grader's randn check)", torch.randn(1, 3, 64, 64, generator=generator)),
    ]
    all_ok = True
    for name, x in cases:
        all_ok &= _check_one_features_call(report, model, name, x.to(device))
    return all_ok


def _check_one_features_call(report: Report, model, name: str, x: torch.Tensor) -> bool:
    expected = (x.shape[0], COURSE_CLASS_VARIABLES["feature_dim"])
    try:
        with torch.no_grad():
            out = model.get_features(x)
    except Exception as error:
        report.failed(name, f"model.get_features on a {tuple(x.shape)} {x.dtype} input on {x.device} raised "
                      f"{type(error).__name__}: {str(error)[:300]}",
                      "get_features must accept (B, 3, 64, 64) float images in [0, 1] on the model's device")
        return False
    if not isinstance(out, torch.Tensor):
        report.failed(name, f"get_features returned a {type(out).__name__}, expected a tensor of shape {expected}",
                      "return only the features tensor from get_features (forward may return more)")
        return False
    if tuple(out.shape) != expected:
        report.failed(name, f"get_features returned shape {tuple(out.shape)}, expected {expected}",
                      "return (B, 1000) features: keep feature_dim = 1000 and flatten the pooled features")
        return False
    if not out.is_floating_point():
        report.failed(name, f"get_features returned dtype {out.dtype}, expected floating point",
                      "return float features")
        return False
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        report.failed(name, f"{bad} of {out.numel()} feature values are NaN or infinite (expected finite values)",
                      "look for a division by zero, log of 0 or sqrt of a negative number in get_features, or "
                      "NaN weights from a diverged training run")
        return False
    report.passed(name, f"shape {tuple(out.shape)}, finite, values in [{float(out.min()):.3g}, "
                  f"{float(out.max()):.3g}]")
    return True


# ----------------------------------------------------------------------------------------------------------
# The notebook: valid, executed, identity filled in
# ----------------------------------------------------------------------------------------------------------

class NotALiteral(str):
    """An identity assigned by an expression (e.g. `input()`) rather than a value; holds its source text."""


def read_notebook(path: str | os.PathLike) -> dict:
    """The notebook as a dict; ValueError when it is not a notebook (invalid JSON, no list of cells)."""
    path = Path(path)
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError(f"{path} is JSON but not a notebook: expected an object with a list of \"cells\"")
    return notebook


def _cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _without_ipython_syntax(source: str) -> str:
    """Lines of IPython magics and shell escapes (%, !) blanked so that ast can parse the rest; the line
    numbers stay the same."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NotALiteral(ast.unparse(node))


def _identity_assignments(tree: ast.AST) -> list[tuple[int, str, object]]:
    """(line, name, value) for every assignment to SCIPER / LAST_NAME / FIRST_NAME, including
    `SCIPER: int = ...` and `LAST_NAME, FIRST_NAME = "Doe", "Jane"`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in IDENTITY_NAMES:
                found.append((node.lineno, target.id, _literal(value)))
            elif (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                  and len(target.elts) == len(value.elts)):
                found += [(node.lineno, t.id, _literal(v)) for t, v in zip(target.elts, value.elts)
                          if isinstance(t, ast.Name) and t.id in IDENTITY_NAMES]
    return sorted(found, key=lambda item: item[0])


_IDENTITY_LINE = re.compile(r"^\s*(SCIPER|LAST_NAME|FIRST_NAME)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def _identity_by_regex(source: str) -> list[tuple[int, str, object]]:
    """Fallback for a cell ast cannot parse: `NAME = value` lines, values read as Python literals."""
    found = []
    for match in _IDENTITY_LINE.finditer(source):
        line = source.count("\n", 0, match.start()) + 1
        text = match.group(2)
        value = NotALiteral(text)
        for candidate in (text, text.split("#")[0].strip()):   # with and without a trailing comment
            try:
                value = ast.literal_eval(candidate)
                break
            except (ValueError, SyntaxError):
                continue
        found.append((line, match.group(1), value))
    return found


def notebook_identity(path: str | os.PathLike) -> dict:
    """{"SCIPER": ..., "LAST_NAME": ..., "FIRST_NAME": ...} as assigned in the notebook's code cells (the
    last assignment wins, as when the notebook runs top to bottom). A name never assigned is absent; a value
    that is not a plain literal is a NotALiteral holding its source. ValueError if the file is no notebook."""
    identity = {}
    for cell in read_notebook(path)["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _cell_source(cell)
        if not any(name in source for name in IDENTITY_NAMES):
            continue
        try:
            assignments = _identity_assignments(ast.parse(_without_ipython_syntax(source)))
        except SyntaxError:
            assignments = _identity_by_regex(source)
        identity.update({name: value for _, name, value in assignments})
    return identity


_PLACEHOLDER = re.compile(
    r"^(|\.\.\.|…|x+|todo|tbd|tbc|none|null|nan|n/?a|your\b.*|.*\byour name\b.*|first[ _]?name|last[ _]?name|"
    r"name|surname|family name|given name|prénom|nom|sciper|<.*>|\[.*\]|\{.*\}|_+|-+|\?+|\*+|0+)$", re.IGNORECASE)


_MISSING = object()
IDENTITY_FILL_IN = ("fill in section 0 \"SCIPER Number and Name\" of the notebook (SCIPER = 123456, "
                    "LAST_NAME = \"...\", FIRST_NAME = \"...\")")


def identity_problems(identity: dict) -> list[str]:
    """What is wrong with the identity found by notebook_identity, one sentence per problem ([] if fine)."""
    problems = []
    sciper = identity.get("SCIPER", _MISSING)
    if sciper is _MISSING:
        problems.append("SCIPER is not assigned anywhere (expected a line `SCIPER = 123456` with your number)")
    elif isinstance(sciper, NotALiteral):
        problems.append(f"SCIPER is set by the expression `{sciper}`; expected the number itself")
    elif isinstance(sciper, bool) or not isinstance(sciper, (int, str)) or sciper is None:
        problems.append(f"SCIPER is {sciper!r}; expected your 6-digit SCIPER number as an integer")
    elif isinstance(sciper, str):
        if re.fullmatch(r"\d{6}", sciper.strip()):
            problems.append(f"SCIPER is the string {sciper!r}; expected an integer: SCIPER = {sciper.strip()}")
        else:
            problems.append(f"SCIPER is {sciper!r} (a placeholder or not a number); expected your 6-digit "
                            f"SCIPER number as an integer")
    elif not 100000 <= sciper <= 999999:
        what = "a placeholder" if sciper == 0 else f"{len(str(abs(sciper)))} digits"
        problems.append(f"SCIPER is {sciper} ({what}); expected your 6-digit SCIPER number")
    for name in ("LAST_NAME", "FIRST_NAME"):
        value = identity.get(name, _MISSING)
        if value is _MISSING:
            problems.append(f"{name} is not assigned anywhere (expected a line `{name} = \"...\"`)")
        elif isinstance(value, NotALiteral):
            problems.append(f"{name} is set by the expression `{value}`; expected the name itself in quotes")
        elif not isinstance(value, str):
            problems.append(f"{name} is {value!r}; expected your name as a string")
        elif _PLACEHOLDER.match(value.strip()) or not re.search(r"[^\W\d_]", value):
            problems.append(f"{name} is {value!r}, a placeholder; expected your {name.lower().replace('_', ' ')}")
    return problems


IDENTITY_FIX = (IDENTITY_FILL_IN + ", save it, and copy it into the submission folder again")


def check_notebook(report: Report, path: Path) -> None:
    try:
        notebook = read_notebook(path)
    except (ValueError, OSError) as error:
        report.failed("notebook is valid", str(error), "re-save the notebook from Jupyter (File > Save) and copy "
                      "it again; do not edit the .ipynb file by hand")
        return
    code_cells = [c for c in notebook["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]
    report.passed("notebook is valid", f"{len(notebook['cells'])} cells, {len(code_cells)} code cells")
    executed = [c for c in code_cells if c.get("outputs") or c.get("execution_count")]
    if code_cells and not executed:
        report.warned("notebook executed", "no code cell has outputs; the course asks for the executed notebook",
                      "run the notebook (or at least its training and results sections), save it, copy it again")
    problems = identity_problems(notebook_identity(path))
    if problems:
        report.failed("notebook identity", "; ".join(problems) + ". A missing identity means a grade of 0",
                      IDENTITY_FIX)
    else:
        identity = notebook_identity(path)
        report.passed("notebook identity", f"SCIPER {identity['SCIPER']}, {identity['FIRST_NAME']} "
                      f"{identity['LAST_NAME']}")


# ----------------------------------------------------------------------------------------------------------
# report.md: words counted like a person would
# ----------------------------------------------------------------------------------------------------------

def _drop_fenced_code(text: str) -> str:
    """Text without fenced code blocks (``` or ~~~, closed by a fence of the same kind at least as long; an
    unclosed fence runs to the end, as in CommonMark)."""
    kept, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if fence is None:
            opening = re.match(r"(`{3,}|~{3,})", stripped)
            if opening and indent <= 3:
                fence = opening.group(1)
                continue
            kept.append(line)
        elif stripped.startswith(fence) and not stripped.rstrip().strip(fence[0]):
            fence = None
    return "\n".join(kept)


def word_count(markdown_text: str) -> int:
    """Words of a markdown text as a reader counts them: fenced code blocks and HTML comments excluded, link
    URLs, HTML tags, list numbers and markdown punctuation (#, *, |, >, ---) not counted; a word is a
    whitespace-separated token holding at least one letter or digit ("self-supervised" and "36.1%" are one
    word each, a lone "—" is none)."""
    text = re.sub(r"<!--.*?(-->|\Z)", " ", markdown_text, flags=re.DOTALL)
    text = _drop_fenced_code(text)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r" \1 ", text)               # images: keep the alt text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r" \1 ", text)                # links: keep the text, drop the URL
    text = re.sub(r"^\s{0,3}\[[^\]]+\]:\s*\S+.*$", " ", text, flags=re.MULTILINE)  # reference definitions
    text = re.sub(r"\[([^\]]*)\]\[[^\]]*\]", r" \1 ", text)               # reference links
    text = re.sub(r"<(https?://|mailto:)[^>]*>", " ", text)               # autolinks
    text = re.sub(r"</?[A-Za-z][^<>]*>", " ", text)                       # HTML tags
    text = re.sub(r"^\s*\d+[.)](?=\s)", " ", text, flags=re.MULTILINE)    # ordered-list numbers
    text = text.replace("|", " ")                                         # table cells
    return sum(1 for token in text.split() if re.search(r"[^\W_]", token))


def check_report(report: Report, path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    words = word_count(text)
    name = "report.md words"
    if words > MAX_REPORT_WORDS:
        report.failed(name, f"{words} words, expected at most {MAX_REPORT_WORDS} (counted without code blocks, "
                      f"HTML comments, link URLs and markdown syntax)",
                      f"shorten it by {words - MAX_REPORT_WORDS} words")
    elif words < SHORT_REPORT_WORDS:
        report.warned(name, f"only {words} words; the report should discuss your OOD results",
                      f"write the discussion (at most {MAX_REPORT_WORDS} words)")
    else:
        report.passed(name, f"{words} words (limit {MAX_REPORT_WORDS})")


# ----------------------------------------------------------------------------------------------------------
# The data
# ----------------------------------------------------------------------------------------------------------

def check_data(report: Report, data_dir, files: dict[str, str] | None, *, load: bool) -> dict[str, Split] | None:
    """The three split files: found (always) and valid (when `load`). Returns the loaded splits, or None."""
    filenames = {**SPLIT_FILES, **(files or {})}
    try:
        directory, source = locate_data_dir(data_dir, explicit_name="--data-dir")
    except DataError as error:
        report.failed("data directory", str(error), "pass --data-dir with the folder holding "
                      f"{', '.join(filenames.values())} (on the course hub: {HUB_DATA_DIR})")
        return None
    report.data_dir = str(directory.resolve())
    if not directory.is_dir():
        report.failed("data directory", f"{directory.resolve()} [{source}] does not exist; places tried:\n"
                      f"{places_tried(None, explicit_name='--data-dir')}",
                      f"pass --data-dir with the folder holding {', '.join(filenames.values())}, or run "
                      f"`python -m utils.synthetic` to generate the embedded default data set there")
        return None
    report.passed("data directory", f"{directory.resolve()} [{source}]")
    splits, all_ok = {}, True
    for split, filename in filenames.items():
        name = f"data {split}"
        try:
            path = find_split_file(split, directory, filename)
        except DataError as error:
            report.failed(name, str(error))
            all_ok = False
            continue
        if not load:
            report.passed(name, f"{path} found (not loaded: --quick)")
            continue
        try:
            splits[split] = load_npz(path)
        except DataError as error:
            report.failed(name, str(error), "regenerate or re-copy the file in the course format")
            all_ok = False
            continue
        data = splits[split]
        report.passed(name, f"{path}: {len(data):,} images, {len(data.classes)} classes")
    if load and all_ok:
        check_class_overlap(report, splits)
    return splits if load and all_ok else None


def check_class_overlap(report: Report, splits: dict[str, Split]) -> None:
    """Warnings only: val should hold the train classes, ood other classes (the point of the OOD test)."""
    train = splits["train"].classes
    shared = np.intersect1d(train, splits["ood"].classes)
    if len(shared):
        report.warned("data classes", f"{len(shared)} of the ood classes are also training classes (e.g. "
                      f"{shared[:5].tolist()}); expected unseen classes", "check that ood.npz is the course's file")
    unseen = np.setdiff1d(splits["val"].classes, train)
    if len(unseen):
        report.warned("data classes", f"{len(unseen)} val classes never occur in train (e.g. {unseen[:5].tolist()})"
                      f"; the in-distribution probes cannot predict them", "check that val.npz matches train.npz")


# ----------------------------------------------------------------------------------------------------------
# The grader's protocol
# ----------------------------------------------------------------------------------------------------------

def run_protocol(report: Report, model, splits: dict[str, Split], *, fast: bool, batch_size: int,
                 progress: bool) -> None:
    """Raw get_features of ToTensor images (batch `batch_size`), then the four probes; fills
    report.accuracies (percent) and report.timings."""
    from utils import probes    # imported here: the structure checks do not need it

    device = next(model.parameters()).device
    features = {}
    for split in ("train", "val", "ood"):
        images = splits[split].images
        report.note(f"Extracting {split} features: {len(images):,} images, batch {batch_size}, {device}")
        start = time.perf_counter()
        try:
            features[split] = probes.encode_images(model, images, batch_size=batch_size, device=device,
                                                   progress=progress)
        except Exception as error:
            report.failed("features on the data", f"get_features on the {split} images raised "
                          f"{type(error).__name__}: {str(error)[:300]}",
                          "lower the memory use of get_features (the grader uses batches of 64)")
            return
        report.timings[f"features {split}"] = time.perf_counter() - start
    if not check_data_features(report, features):
        return

    run_probes(report, probes, features, splits, fast=fast, device=device)


def run_probes(report: Report, probes, features: dict[str, torch.Tensor], splits: dict[str, Split], *,
               fast: bool, device: torch.device) -> None:
    """The four probes (probes.evaluate_protocol, the one implementation of the grader's protocol), a line each
    with its accuracy and time as it finishes (the exact linear probe can take minutes: the user sees which
    step is running). ID: fit on train, scored on val. OOD: the course's RandomState(42) 80/20 split."""
    labels = {name: torch.from_numpy(splits[name].labels) for name in ("train", "val", "ood")}
    fit_n, score_n = (len(ix) for ix in ood_split(len(splits["ood"])))
    how = "torch (--fast)" if fast else "scikit-learn, exactly as the grader"
    report.note(f"Probes ({how}): k-NN (k=5) and logistic regression (C=1, max_iter=1000). ID: fit on "
                f"{len(features['train']):,} train, scored on {len(features['val']):,} val. OOD: fit on "
                f"{fit_n:,}, scored on {score_n:,} (the course's RandomState(42) 80/20 split).")

    running = {"label": "first"}

    def show(step: dict) -> None:
        running["label"] = step["label"]
        if step["event"] == "start":
            if step["key"].endswith("linear") and not fast and device.type == "cpu" \
                    and step["n_fit"] > LARGE_TRAIN_FOR_CPU:
                report.warned("exact probes on the CPU", f"the exact linear probe (scikit-learn lbfgs) on "
                              f"{step['n_fit']:,} images will take many minutes on the CPU",
                              "use --fast for the torch probes (same protocol), or run on a GPU machine")
            if report.echo:      # shown while the probe runs, replaced by its result line
                print(f"  {step['label']:<11} running ...", end="\r", flush=True)
        else:
            report.accuracies[step["key"]] = float(step["accuracy"])
            report.timings[f"probe {step['key']}"] = step["seconds"]
            report.note(f"  {step['label']:<11} {format_percent(step['accuracy']):>7}   ({step['seconds']:.1f} s)")

    try:
        probes.evaluate_protocol((features["train"], labels["train"]), (features["val"], labels["val"]),
                                 (features["ood"], labels["ood"]), fast=fast, progress=False, device=device,
                                 on_step=show)
    except Exception as error:
        report.failed("probes", f"the {running['label']} probe raised {type(error).__name__}: {str(error)[:300]}",
                      "check the data files (each split needs at least 2 classes and 5 images)")


def check_data_features(report: Report, features: dict[str, torch.Tensor]) -> bool:
    """The probes need finite features; identical features for every image mean a collapsed encoder."""
    for split, values in features.items():
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            report.failed("features on the data", f"{bad} of the {split} feature values are NaN or infinite "
                          f"(expected finite values)", "look for NaN weights or numerically unsafe operations "
                          "in get_features")
            return False
    spread = float(features["train"].float().std(dim=0).max()) if len(features["train"]) > 1 else 0.0
    if spread < 1e-6:
        report.warned("features on the data", "every training image gets the same features (the encoder has "
                      "collapsed): the probes can only guess", "check the training loss and the collapse "
                      "monitor; retrain")
    else:
        report.passed("features on the data", ", ".join(f"{s} {tuple(v.shape)}" for s, v in features.items()) +
                      ", finite")
    return True


def accuracy_lines(report: Report) -> list[str]:
    """The four accuracies as the grader reports them, in percent."""
    if not report.accuracies:
        return []
    acc = report.accuracies
    return [f"  In-distribution (fit on train, scored on val):  k-NN {format_percent(acc['id_knn']):>7}   "
            f"linear {format_percent(acc['id_linear']):>7}",
            f"  Out-of-distribution (80% fit / 20% scored):     k-NN {format_percent(acc['ood_knn']):>7}   "
            f"linear {format_percent(acc['ood_linear']):>7}"]


# ----------------------------------------------------------------------------------------------------------
# Assembling the submission folder (the notebook's last section)
# ----------------------------------------------------------------------------------------------------------

def set_arch_line(models_text: str, arch: str | None,
                  models_path: str | os.PathLike = MODELS_FILE) -> tuple[str, str | None]:
    """(text, old arch) with the `ARCH = "..."` line set to `arch`; old arch is None when nothing changed.
    Requires exactly one such line when a change is needed."""
    if not arch:
        return models_text, None
    matches = ARCH_LINE.findall(models_text)
    if len(matches) == 1 and matches[0] == arch:
        return models_text, None
    if len(matches) != 1:
        raise SubmissionError(f"the weights were trained with arch {arch!r}, so the submitted models.py must build "
                              f"it, but {models_path} has {len(matches)} lines matching `ARCH = \"...\"` at the "
                              f"start of a line (expected exactly one). Fix: keep a single line "
                              f"ARCH = \"{arch}\" in models.py, or export weights whose arch is what models.py "
                              f"builds. Nothing was copied.")
    return ARCH_LINE.sub(f'ARCH = "{arch}"', models_text, count=1), matches[0]


def assemble_submission(folder: str | os.PathLike, *, weights: str | os.PathLike,
                        notebook: str | os.PathLike = NOTEBOOK_FILE, report: str | os.PathLike = REPORT_FILE,
                        models: str | os.PathLike = MODELS_FILE, overwrite: bool = True) -> Path:
    """Copy the four files into `folder` (created if missing) under the names the grader expects.

    - Refuses, copying nothing, while the notebook's SCIPER or names are placeholders (the notebook is read
      from disk: save it first).
    - If the weights' safetensors metadata names an "arch" other than models.py's `ARCH = "..."` line, the
      copied models.py gets that line set to the weights' arch, so that the grader's `ImageEncoder()` builds
      the architecture the weights fit (e.g. a CPU demo trained with "tiny"). The source models.py is never
      modified. Returns the folder.
    """
    folder = expand_path(folder)
    sources = {MODELS_FILE: Path(models), WEIGHTS_FILE: Path(weights), NOTEBOOK_FILE: Path(notebook),
               REPORT_FILE: Path(report)}
    missing = [f"{name} (looked for {path})" for name, path in sources.items() if not path.is_file()]
    if missing:
        raise SubmissionError(f"cannot assemble the submission, source file(s) not found: {'; '.join(missing)}. "
                              f"Nothing was copied.")
    try:
        problems = identity_problems(notebook_identity(sources[NOTEBOOK_FILE]))
    except ValueError as error:
        raise SubmissionError(f"cannot read the notebook: {error}. Nothing was copied.") from error
    if problems:
        raise SubmissionError(f"the notebook {sources[NOTEBOOK_FILE]} does not name its author yet: "
                              f"{'; '.join(problems)}. Fix: {IDENTITY_FILL_IN}, save the notebook (Ctrl+S: this "
                              f"step reads it from disk), then run this step again. Nothing was copied.")
    try:
        weights_arch = weights_metadata(sources[WEIGHTS_FILE]).get("arch")
    except Exception as error:
        raise SubmissionError(f"{sources[WEIGHTS_FILE]} is not a readable safetensors file ({type(error).__name__}: "
                              f"{error}); export the weights again. Nothing was copied.") from error
    models_text = sources[MODELS_FILE].read_text(encoding="utf-8")
    new_text, old_arch = set_arch_line(models_text, weights_arch, sources[MODELS_FILE])

    targets = {name: folder / name for name in SUBMISSION_FILES}
    if not overwrite:
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing:
            raise SubmissionError(f"{', '.join(existing)} already exist(s) and overwrite=False. Nothing was copied.")
    same = {name for name, path in sources.items() if targets[name].exists() and targets[name].samefile(path)}
    if MODELS_FILE in same and old_arch is not None:
        raise SubmissionError(f"{sources[MODELS_FILE]} is the submission folder's own models.py, and it would have "
                              f"to be rewritten (ARCH \"{old_arch}\" -> \"{weights_arch}\"); your models.py is never "
                              f"modified. Assemble into another folder. Nothing was copied.")

    folder.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, NOTEBOOK_FILE, REPORT_FILE):
        if name not in same:
            shutil.copyfile(sources[name], targets[name])
    if MODELS_FILE not in same:
        atomic_write(targets[MODELS_FILE], lambda tmp: Path(tmp).write_text(new_text, encoding="utf-8"))
    if old_arch is not None:
        print(f"Notice: {sources[WEIGHTS_FILE]} was trained with arch {weights_arch!r} but {sources[MODELS_FILE]} "
              f"builds {old_arch!r}. The copy {targets[MODELS_FILE]} says ARCH = \"{weights_arch}\" so that the "
              f"grader's ImageEncoder() builds the architecture of the weights; your {sources[MODELS_FILE]} is "
              f"unchanged.")
    print(f"Submission assembled in {folder}: {', '.join(SUBMISSION_FILES)}. "
          f"Check it with: python eval.py -i {folder}")
    return folder
