"""What the course expects of a submission: its files, the template's class variables, the word limit, what
models.py may import. Every check reads these names from here."""
from __future__ import annotations

import os
import re
from pathlib import Path

from utils.probes import GRADER_BATCH_SIZE  # noqa: F401  (the grader's constants live with the probes)


DEFAULT_SUBMISSION_DIR = "~/cs461_assignment1_submission"
MODELS_FILE = "models.py"
WEIGHTS_FILE = "final_model.safetensors"
NOTEBOOK_FILE = "CS461_Assignment1.ipynb"
REPORT_FILE = "report.md"
SUBMISSION_FILES = (MODELS_FILE, WEIGHTS_FILE, NOTEBOOK_FILE, REPORT_FILE)

COURSE_CLASS_VARIABLES = {"input_dim": 64, "input_channels": 3, "feature_dim": 1000, "proj_dim": 128}
MAX_REPORT_WORDS = 500
SHORT_REPORT_WORDS = 30
# The places of a report draft (utils/submission/report_draft.py) its author still has to write: "<<FILL IN: ...>>".
FILL_IN_MARKER = "<<FILL IN"
IDENTITY_NAMES = ("SCIPER", "LAST_NAME", "FIRST_NAME")
# The kit's networks sized for a CPU demo (models.ARCHITECTURES): eval.py warns loudly when one is handed in.
CPU_SIZED_ARCHS = ("tiny", "small")
# eval.py's flag that accepts weights trained on the kit's generated data (`make demo` passes it; a student never
# has to), and the environment variable through which `make demo` tells the notebook's Section 7 to pass it.
DEMO_FLAG = "--demo"
DEMO_ENV = "CS461_DEMO"
# The course's baselines under the grader's protocol (percent; SimCLR of the week-3 notebook, measured by a
# student): the notebook's ID-vs-OOD figure and the report draft compare with them.
COURSE_BASELINES = {"id_knn": 18.0, "ood_knn": 12.0, "ood_linear": 19.0}

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


def expand_path(path: str | os.PathLike) -> Path:
    """A path with ~ and environment variables ($HOME) expanded."""
    return Path(os.path.expanduser(os.path.expandvars(str(path))))
