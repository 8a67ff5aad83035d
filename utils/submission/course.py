"""The checks' shared vocabulary: what the course expects of a submission (its files, the template's class
variables, the word limit, what models.py may import, the baselines), one finding (`Check`), the list of them with
the four accuracies (`Report`), and how accuracies are printed.

Tests: tests/test_eval.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from utils.data import expand_path  # noqa: F401  (re-exported: the submission folder's path)
from utils.notebook_file import NOTEBOOK
from utils.probes import COURSE_BASELINES, GRADER_BATCH_SIZE  # noqa: F401  (the grader's constants live there)

DEFAULT_SUBMISSION_DIR = "~/cs461_assignment1_submission"
MODELS_FILE = "models.py"
WEIGHTS_FILE = "final_model.safetensors"
NOTEBOOK_FILE = NOTEBOOK.name                     # CS461_Assignment1.ipynb
REPORT_FILE = "report.md"
SUBMISSION_FILES = (MODELS_FILE, WEIGHTS_FILE, NOTEBOOK_FILE, REPORT_FILE)

COURSE_CLASS_VARIABLES = {"input_dim": 64, "input_channels": 3, "feature_dim": 1000, "proj_dim": 128}
MAX_REPORT_WORDS = 500
SHORT_REPORT_WORDS = 30
# The places of a report draft (utils/submission/handin.py) its author still has to write: "<<FILL IN: ...>>";
# a draft has DRAFT_PLACES of them.
FILL_IN_MARKER = "<<FILL IN"
DRAFT_PLACES = 6
# The first line of the kit's own report.md, its reference: eval.py fails a report that still starts with it.
REFERENCE_REPORT_MARK = "Reference report of the kit"
IDENTITY_NAMES = ("SCIPER", "LAST_NAME", "FIRST_NAME")
# The kit's networks sized for a CPU demo (models.ARCHITECTURES): eval.py warns loudly when one is handed in.
CPU_SIZED_ARCHS = ("tiny", "small")
# eval.py's flag for a demo of the kit, not a submission: weights trained on the kit's generated data and the
# untouched report draft are then warnings (`make demo` passes it; a student never has to), and the environment
# variable through which `make demo` tells the notebook's Section 7 to pass it.
DEMO_FLAG = "--demo"
DEMO_ENV = "CS461_DEMO"

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

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class SubmissionError(ValueError):
    """The submission cannot be assembled; the message says what is wrong and how to fix it."""


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


def summary(checks: list[dict]) -> str:
    """One line for checks (Check.as_dict()s): "All 21 checks passed (1 warning)." or "2 checks failed: a, b"."""
    failures = [c["name"] for c in checks if c["status"] == "fail"]
    warned = sum(c["status"] == "warn" for c in checks)
    warn_text = f" ({warned} warning{'s' if warned != 1 else ''})" if warned else ""
    if not failures:
        return f"All {len(checks)} checks passed{warn_text}."
    return f"{len(failures)} check{'s' if len(failures) != 1 else ''} failed: {', '.join(failures)}{warn_text}."


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
    backend: str = ""                    # what computed the probes: scikit-learn (its version, the extension's)
    weights_record: dict = field(default_factory=dict)   # what the weights' metadata says of their run
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

    @property
    def exit_status(self) -> int:
        """eval.py's exit status: 0 when no check failed, 1 otherwise (also written in its --json file)."""
        return 0 if self.ok else 1

    def check(self, name: str) -> Check | None:
        """The last check with this name (None if it was not made)."""
        return next((c for c in reversed(self.checks) if c.name == name), None)

    def summary(self) -> str:
        return summary([c.as_dict() for c in self.checks])

    def as_dict(self) -> dict:
        return {"ok": self.ok, "exit_status": self.exit_status, "summary": self.summary(), "folder": self.folder,
                "mode": self.mode, "device": self.device, "data_dir": self.data_dir,
                "checks": [c.as_dict() for c in self.checks], "accuracies_percent": dict(self.accuracies),
                "probes_skipped": self.probes_skipped, "probes_backend": self.backend,
                "weights": dict(self.weights_record),
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}


def format_percent(value: float) -> str:
    """36.1234 (a percentage) -> "36.12%". Accuracies in this package are always percentages."""
    return f"{value:.2f}%"


def accuracy_lines(accuracies: dict[str, float]) -> list[str]:
    """The four accuracies (percent) as eval.py prints them."""
    if not accuracies:
        return []
    cell = lambda key: f"{format_percent(accuracies[key]):>7}"  # noqa: E731
    return [f"  In-distribution (fit on train, scored on val):  k-NN {cell('id_knn')}   linear {cell('id_linear')}",
            f"  Out-of-distribution (80% fit / 20% scored):     k-NN {cell('ood_knn')}   linear {cell('ood_linear')}"]
