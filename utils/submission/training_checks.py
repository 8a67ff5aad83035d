"""What the weights say about the run that made them (the metadata utils/train.py writes): trained on real
images, with the graded network, and shown in the handed-in notebook."""
from __future__ import annotations

from pathlib import Path

from utils.checkpoint import CheckpointError, weights_metadata
from utils.data import DATA_DIR_ENV, DATA_ORIGINS, HUB_DATA_DIR
from utils.submission.course import CPU_SIZED_ARCHS, DEMO_FLAG
from utils.submission.report import Report

TRAINING_DATA_CHECK = "weights trained on real images"
ARCH_CHECK = "network size"


def read_metadata(path: Path | None) -> dict[str, str] | None:
    """The weights' metadata ({} when it has none); None when there is no readable file (the model checks
    report that)."""
    if path is None:
        return None
    try:
        return weights_metadata(path)
    except CheckpointError:
        return None


def check_training_data(report: Report, metadata: dict[str, str], weights_name: str, *, demo: bool) -> None:
    """FAIL for weights trained on the kit's generated shapes, unless this is a demo; WARN when the file does
    not say what it was trained on (it was not exported by the kit's train())."""
    origin = metadata.get("trained_on")
    where = f" ({metadata['train_data']}, {metadata.get('train_images', '?')} images)" if "train_data" in metadata else ""
    if origin is None:
        report.warned(TRAINING_DATA_CHECK, f"{weights_name} does not record what it was trained on (it was not "
                      f"exported by the kit's training run)", "make sure it was trained on the course data")
    elif origin == "generated" and not demo:
        report.failed(TRAINING_DATA_CHECK, f"{weights_name} was trained on {DATA_ORIGINS['generated']}{where}: the "
                      f"grader scores it on photos of classes it never saw, where such a model is near chance. The "
                      f"course data was not found when the notebook ran",
                      f"point the notebook at the course data (the hub's {HUB_DATA_DIR}, or set {DATA_DIR_ENV}), "
                      f"run it again in the full profile on a GPU, and hand in those weights")
    elif origin == "generated":
        report.warned(TRAINING_DATA_CHECK, f"{weights_name} was trained on {DATA_ORIGINS['generated']}{where}; "
                      f"accepted because this is a demo ({DEMO_FLAG})", "")
    else:
        report.passed(TRAINING_DATA_CHECK, f"trained on {DATA_ORIGINS.get(origin, origin)}{where}")


def check_network_size(report: Report, metadata: dict[str, str], weights_name: str) -> None:
    """A loud WARN for the kit's CPU-sized networks: they run the pipeline on a laptop, they are not what
    should be graded."""
    arch = metadata.get("arch")
    if arch in CPU_SIZED_ARCHS:
        report.warned(ARCH_CHECK, f"{weights_name} is the {arch!r} network, sized for a CPU demo, not the "
                      f"graded ResNet-18", "train in the notebook's full profile on a GPU (CS461_PROFILE=full: "
                      "arch resnet18_s2) and hand in those weights")
    elif arch:
        report.passed(ARCH_CHECK, f"arch {arch!r}")
