"""The course's npz data: finding it, loading it with validation, the OOD split, batches on the device.

Data flows one way: npz file -> validated numpy arrays -> (optionally) one uint8 tensor on the training
device -> index batches. Nothing here converts, resizes or substitutes data: a file that is not what the
course's format says gives a `DataError` naming the file, what was expected, what was found and how to fix it.

Course format: `images` uint8 (N, 64, 64, 3) RGB, HWC; `labels` integers (N,), arbitrary ids such as
ImageNet-1k class ids, never assumed contiguous. Optional: `class_names` (+ `class_ids`).
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms

from utils.synthetic import DEFAULT_OUT_DIR, SPLIT_FILES  # noqa: F401  (the course's file names, written once)

IMAGE_SHAPE = (64, 64, 3)
HUB_DATA_DIR = Path("/shared/CS461/cs461_assignment1_data")
LOCAL_DATA_DIR = Path(DEFAULT_OUT_DIR)      # where the embedded default data set is generated
DATA_DIR_ENV = "CS461_DATA_DIR"

# The course's data set, by content (not by path: a copy in the home folder is the course's data too): 200
# classes of 500 training images, 50 validation images of each of the same classes.
COURSE_TRAIN_CLASSES, COURSE_TRAIN_PER_CLASS, COURSE_VAL_PER_CLASS = 200, 500, 50

# What a run was trained on, recorded in its weights ("trained_on") and training_metrics.json: eval.py fails a
# submission that was not trained on the course's data set (outside `make demo`).
DATA_ORIGINS = {"course": "the course's data set (200 classes x 500 training images)",
                "other": "images that are not the course's data set",
                "generated": "the kit's generated data (utils/synthetic.py), not photos"}

OOD_SPLIT_SEED = 42
OOD_SCORE_RATIO = 0.2

# Validation reads float images in chunks so that checking a large file never doubles its memory.
_CHECK_CHUNK = 4096


class DataError(ValueError):
    """A data file or directory is missing or not in the course's format. The message says how to fix it."""


# ---- Where the data is

def expand_path(path: str | os.PathLike) -> Path:
    """A path with ~ and environment variables ($HOME) expanded."""
    return Path(os.path.expanduser(os.path.expandvars(str(path))))


def data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path | None]]:
    """The places looked at, in this order: (description, path or None when not set). ~ and environment
    variables ($HOME) in the first two (an explicit argument, $CS461_DATA_DIR) are expanded."""
    env = os.environ.get(DATA_DIR_ENV)
    return [
        ("explicit argument", expand_path(data_dir) if data_dir else None),
        (f"${DATA_DIR_ENV}", expand_path(env) if env else None),
        ("course hub", HUB_DATA_DIR),
        ("local default", LOCAL_DATA_DIR),
    ]


def locate_data_dir(data_dir: str | os.PathLike | None = None, *,
                    explicit_name: str = "explicit argument") -> tuple[Path, str]:
    """(folder, where it came from): THE data-folder resolution of the kit. The notebook, `utils.train`,
    eval.py and the benchmarks all call it, so that they agree on the folder.

    In data_dir_candidates' order. An explicit argument or $CS461_DATA_DIR must exist: pointing at a missing
    folder is a DataError naming every place tried, never a silent switch to other data. The hub folder is used
    when it exists. Otherwise the local default is returned even if it does not exist yet
    (`utils.synthetic.ensure_default_data` generates the embedded default data set there).
    explicit_name: how messages call the explicit argument (eval.py: "--data-dir")."""
    for source, path in data_dir_candidates(data_dir):
        if path is None or (source == "course hub" and not path.is_dir()):
            continue
        label = explicit_name if source == "explicit argument" else source
        if source in ("explicit argument", f"${DATA_DIR_ENV}") and not path.is_dir():
            raise DataError(f"data directory {path} (from {label}) does not exist or is not a folder; "
                            f"expected a folder holding {', '.join(SPLIT_FILES.values())}. Places tried:\n"
                            f"{places_tried(data_dir, explicit_name=explicit_name)}")
        return path, label
    raise AssertionError("unreachable: the local default is always a candidate")


def data_dir_help(explicit: str = "--data-dir") -> str:
    """The resolution order in words, for help texts: made from data_dir_candidates, so that no help text restates
    it by hand."""
    names = {"explicit argument": explicit, "course hub": str(HUB_DATA_DIR), "local default": f"./{LOCAL_DATA_DIR}"}
    order = [names.get(source, f"{source} when set") for source, _ in data_dir_candidates(None)
             if source != "explicit argument"]
    return f"{order[0]}, else {order[1]} when it exists, else {order[2]}"


def places_tried(data_dir: str | os.PathLike | None = None, *, explicit_name: str = "explicit argument") -> str:
    """The places locate_data_dir looks at, in order, one line each, with whether each folder exists."""
    return _place_lines(data_dir, explicit_name)


def _place_lines(data_dir, explicit_name: str = "explicit argument", filename: str | None = None) -> str:
    """places_tried's lines; with a filename, each names that file in the folder and whether it is there."""
    lines = []
    for source, candidate in data_dir_candidates(data_dir):
        source = explicit_name if source == "explicit argument" else source
        if candidate is None:
            lines.append(f"  - {source}: not set")
        elif filename:
            lines.append(f"  - {source}: {candidate / filename} "
                         f"({'found' if (candidate / filename).is_file() else 'missing'})")
        else:
            lines.append(f"  - {source}: {candidate} ({'folder exists' if candidate.is_dir() else 'does not exist'})")
    return "\n".join(lines)


def resolve_data_dir(data_dir: str | os.PathLike | None = None, *, verbose: bool = True) -> Path:
    """The data directory to use (locate_data_dir), and (if verbose) one printed line saying which was chosen
    and why."""
    path, source = locate_data_dir(data_dir)
    if verbose:
        note = "" if path.is_dir() else " (does not exist yet)"
        print(f"Data directory: {path.resolve()} [{source}]{note}")
        if source == "local default":
            print(f"  The course data was not found (not at {HUB_DATA_DIR}), so this run uses "
                  f"{DATA_ORIGINS['generated']}: right for a demo, but eval.py fails a submission trained on it. "
                  f"For the course data, set DATA_DIR in the notebook's settings cell to its folder (data_dir=... "
                  f"on the command line).")
    return path


def find_split_file(split: str, data_dir: str | os.PathLike | None = None, filename: str | None = None) -> Path:
    """Path of one split's npz file (split in train/val/ood), or a DataError naming every place searched."""
    filename = filename or SPLIT_FILES[split]
    directory = resolve_data_dir(data_dir, verbose=False)
    path = directory / filename
    if path.is_file():
        return path
    raise DataError(
        f"{split} data file {path} not found. Searched, in order:\n" + _place_lines(data_dir, filename=filename) +
        f"\nFix: point CS461_DATA_DIR (or the data_dir argument) at the folder holding {filename}, or run "
        f"`python -m utils.synthetic` to generate the embedded default data set in ./{LOCAL_DATA_DIR}.")


# ---- Loading and validation

@dataclass
class Split:
    """One validated split. images: uint8 (N, 64, 64, 3) RGB HWC; labels: int64 (N,)."""
    images: np.ndarray
    labels: np.ndarray
    class_names: dict[int, str] | None
    path: Path

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> np.ndarray:
        """Sorted distinct labels, (C,)."""
        return np.unique(self.labels)

    def name_of(self, label: int) -> str:
        """Human-readable class name, or the label id when the file has no names."""
        if self.class_names and int(label) in self.class_names:
            return self.class_names[int(label)]
        return str(int(label))


def load_split(split: str, data_dir: str | os.PathLike | None = None, filename: str | None = None) -> Split:
    """Find and load one split (train/val/ood) with full validation."""
    return load_npz(find_split_file(split, data_dir, filename))


def load_splits(data_dir: str | os.PathLike | None = None, splits=("train", "val", "ood")) -> dict[str, Split]:
    """Load several splits from one directory: {split: Split}."""
    return {s: load_split(s, data_dir) for s in splits}


def load_npz(path: str | os.PathLike) -> Split:
    """Load one course-format npz file and validate it (see module docstring); DataError on any problem.
    Memory: each array is read once; validation of uint8 images allocates nothing of their size, so loading
    the course's 1.2 GB train set holds one copy of it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable npz archive ({type(error).__name__}: {error}). Expected an "
                        f"npz file with keys 'images' and 'labels' (np.savez). Is the file complete?") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an npz archive with keys 'images' and 'labels', found a single "
                        f".npy array of shape {getattr(archive, 'shape', '?')}. Save with "
                        f"np.savez(path, images=..., labels=...).")
    with archive:
        missing = [k for k in ("images", "labels") if k not in archive.files]
        if missing:
            raise DataError(f"{path}: missing key(s) {missing}; found keys {sorted(archive.files)}. Expected "
                            f"'images' (uint8, N x 64 x 64 x 3) and 'labels' (N integers).")
        try:
            images, labels = archive["images"], archive["labels"]
            names = _read_class_names(archive, path)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: an array inside the archive cannot be read ({type(error).__name__}: "
                            f"{error}). The file is probably truncated or was written with pickled objects; "
                            f"regenerate or re-copy it.") from error
    check_images(images, path)
    labels = check_labels(labels, len(images), path)
    return Split(images=images, labels=labels, class_names=names, path=path)


def check_images(images: np.ndarray, path: Path | str = "<array>") -> None:
    """Raise DataError unless `images` is uint8 (N, 64, 64, 3) with N > 0."""
    shape = tuple(images.shape)
    if images.ndim != 4:
        raise DataError(f"{path}: 'images' has shape {shape}; expected 4 dimensions (N, 64, 64, 3).")
    if shape[0] == 0:
        raise DataError(f"{path}: 'images' is empty (0 images); expected N > 0 images of shape (64, 64, 3).")
    if shape[1:] != IMAGE_SHAPE:
        if shape[1] == 3 and shape[2:] == IMAGE_SHAPE[:2]:
            raise DataError(f"{path}: 'images' has shape {shape}, channels first (CHW); expected channels "
                            f"last (HWC) (N, 64, 64, 3). Fix: images = images.transpose(0, 2, 3, 1).")
        if shape[-1] == 3:
            raise DataError(f"{path}: 'images' are {shape[1]}x{shape[2]} pixels; expected 64x64. Resize them "
                            f"to 64x64 before saving (the grader feeds 64x64 images).")
        raise DataError(f"{path}: 'images' has shape {shape}; expected (N, 64, 64, 3) RGB, channels last.")
    if images.dtype == np.uint8:
        return
    if images.dtype.kind == "f":
        lo, hi, n_nan = _float_range(images)
        if n_nan:
            raise DataError(f"{path}: 'images' holds {n_nan} NaN values; expected uint8 pixels in 0..255.")
        fix = ("(images * 255).round().astype(np.uint8)" if hi <= 1.0
               else "np.clip(images, 0, 255).round().astype(np.uint8)")
        raise DataError(f"{path}: 'images' has dtype {images.dtype} with values in [{lo:g}, {hi:g}]; expected "
                        f"uint8 in 0..255 (what ToTensor turns into [0, 1]). Fix: images = {fix}.")
    if images.dtype.kind in "iu":
        lo, hi = int(images.min()), int(images.max())
        fix = "images.astype(np.uint8)" if 0 <= lo and hi <= 255 else "rescale the values to 0..255 first"
        raise DataError(f"{path}: 'images' has dtype {images.dtype} with values in [{lo}, {hi}]; expected "
                        f"uint8 in 0..255. Fix: {fix}.")
    raise DataError(f"{path}: 'images' has dtype {images.dtype}; expected uint8 pixels in 0..255.")


def check_labels(labels: np.ndarray, n_images: int, path: Path | str = "<array>") -> np.ndarray:
    """Validated labels as int64 (N,). Raises DataError on NaN, non-integers, wrong shape or count."""
    if labels.ndim != 1:
        raise DataError(f"{path}: 'labels' has shape {tuple(labels.shape)}; expected one integer per image, "
                        f"shape ({n_images},). Fix: labels = labels.reshape(-1).")
    if labels.dtype.kind == "f":
        n_nan = int(np.isnan(labels).sum())
        if n_nan:
            raise DataError(f"{path}: 'labels' holds {n_nan} NaN values; expected integer class ids.")
        if not np.all(labels == np.round(labels)):
            raise DataError(f"{path}: 'labels' has dtype {labels.dtype} with non-integer values; expected "
                            f"integer class ids.")
        raise DataError(f"{path}: 'labels' has dtype {labels.dtype}; expected integers. "
                        f"Fix: labels = labels.astype(np.int64).")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' has dtype {labels.dtype}; expected integer class ids.")
    if len(labels) != n_images:
        raise DataError(f"{path}: {n_images} images but {len(labels)} labels; expected one label per image.")
    return labels.astype(np.int64, copy=False)


def _float_range(images: np.ndarray) -> tuple[float, float, int]:
    """(min, max, NaN count) of a float array, chunk by chunk to keep memory flat."""
    lo, hi, n_nan = np.inf, -np.inf, 0
    for start in range(0, len(images), _CHECK_CHUNK):
        chunk = images[start:start + _CHECK_CHUNK]
        nan = np.isnan(chunk)
        n_nan += int(nan.sum())
        if not nan.all():
            lo, hi = min(lo, float(np.nanmin(chunk))), max(hi, float(np.nanmax(chunk)))
    return lo, hi, n_nan


def _read_class_names(archive, path: Path) -> dict[int, str] | None:
    """{label: name} from optional keys. `class_ids` aligns names with labels; without it, names are indexed
    by label (the convention of files whose labels are 0..C-1)."""
    if "class_names" not in archive.files:
        return None
    names = [str(n) for n in archive["class_names"].reshape(-1)]
    if "class_ids" in archive.files:
        ids = archive["class_ids"].reshape(-1)
        if len(ids) != len(names):
            raise DataError(f"{path}: {len(names)} class_names but {len(ids)} class_ids; expected one id per name.")
        return {int(i): n for i, n in zip(ids, names)}
    return dict(enumerate(names))


# ---- The OOD split

def ood_split(n: int, score_ratio: float = OOD_SCORE_RATIO, seed: int = OOD_SPLIT_SEED):
    """The course's OOD split, exactly as its eval.py draws it:
    `mask = RandomState(42).permutation(n) >= int(n * 0.2)`: the 80% where mask is True fit the probes,
    the other 20% score them. Returns (fit_idx, score_idx), sorted int64 index arrays."""
    rng = np.random.RandomState(seed)
    fit_mask = rng.permutation(n) >= int(n * score_ratio)
    return np.flatnonzero(fit_mask), np.flatnonzero(~fit_mask)


# ---- The course's Dataset (for students' DataLoader code), and device-resident batches (for training)

default_transform = transforms.ToTensor()
"""The course's default transform: uint8 HWC image -> float (3, 64, 64) in [0, 1]; no mean/std normalisation."""


class ImageDatasetNPZ(Dataset):
    """The course's dataset class, same signature and items: (transform(image), label). Unlike the course's,
    the file is validated on load (a DataError names what is wrong)."""

    def __init__(self, data_path, transform=default_transform):
        split = load_npz(data_path)
        self.images = split.images
        self.labels = split.labels
        self.class_names = split.class_names
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        image = self.images[idx]
        return (self.transform(image) if self.transform else image), self.labels[idx]


def to_device(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """The whole uint8 image array as one tensor on `device`, still (N, 64, 64, 3).
    On the CPU this shares the numpy memory (no copy); on CUDA it is one host-to-device copy (1.2 GB for the
    course's train set). Batches are indexed from it; `as_model_input` turns a batch into model input."""
    return torch.from_numpy(images).to(device)


def as_model_input(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) (or already (B, 3, H, W)) -> float32 (B, 3, H, W) in [0, 1], exactly what ToTensor gives
    the grader. The kit's one uint8 -> float conversion (training views, probes, feature statistics).
    The permute is free: the result is an NCHW view in channels_last memory layout."""
    if batch_uint8.shape[-1] == 3 and batch_uint8.shape[1] != 3:
        batch_uint8 = batch_uint8.permute(0, 3, 1, 2)
    return batch_uint8.float().div_(255.0)


def spread_rows(n: int, max_rows: int) -> np.ndarray:
    """Indices of at most `max_rows` of n rows, spread evenly over the whole set (0 or max_rows >= n: all of
    them). Never the first max_rows: course-format files are often sorted by class, and the first 20,000 of
    50,000 sorted images hold only 40 of 100 classes. The kit's one row sampler (periodic probes, fine-tuning,
    max_train_images, the statistics command)."""
    if not max_rows or max_rows >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, max_rows).round().astype(np.int64)


def epoch_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """A fresh shuffle of 0..n-1, (n,) int64 on the generator's device. The trainer takes consecutive
    `batch_size` slices of it and drops the incomplete last one (every step then has the same shape, which
    contrastive losses, BatchNorm and torch.compile prefer)."""
    return torch.randperm(n, generator=generator, device=generator.device)


@dataclass
class TrainData:
    """The three splits (numpy, validated) and the training images as one uint8 tensor on the device."""
    train: Split
    val: Split
    ood: Split
    train_on_device: torch.Tensor       # uint8 (N, 64, 64, 3)

    def signature(self) -> str:
        h = hashlib.sha1()
        for split in (self.train, self.val, self.ood):
            h.update(str(split.images.shape).encode())
            h.update(np.ascontiguousarray(split.labels).tobytes())
        return h.hexdigest()[:8]


def training_data_record(train: Split, val: Split) -> dict[str, str]:
    """What a run trained on, as the weights' metadata records it (strings): "trained_on" ("course" when the
    training and validation sets have the course's shape, COURSE_*; "generated" for the kit's generated data;
    else "other"), "train_data" (the file), "train_images", "train_classes", "train_per_class" ("500", or
    "min-max" when the classes differ), "val_images" and "val_classes_in_train"."""
    from utils.synthetic import is_generated
    _, counts = np.unique(train.labels, return_counts=True)
    per_class = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    val_classes = np.unique(val.labels)
    record = {"train_data": str(train.path), "train_images": str(len(train)), "train_classes": str(len(counts)),
              "train_per_class": per_class, "val_images": str(len(val)),
              "val_classes_in_train": str(int(np.isin(val_classes, train.classes).sum()))}
    origin = "generated" if is_generated(train.path) else ("course" if is_course_shaped(record) else "other")
    return {"trained_on": origin, **record}


def is_course_shaped(record: dict[str, str]) -> bool:
    """Whether a training_data_record describes the course's data set: 200 classes of 500 training images each,
    and 50 validation images of each of those classes."""
    return (record.get("train_classes") == str(COURSE_TRAIN_CLASSES)
            and record.get("train_per_class") == str(COURSE_TRAIN_PER_CLASS)
            and record.get("train_images") == str(COURSE_TRAIN_CLASSES * COURSE_TRAIN_PER_CLASS)
            and record.get("val_images") == str(COURSE_TRAIN_CLASSES * COURSE_VAL_PER_CLASS)
            and record.get("val_classes_in_train") == str(COURSE_TRAIN_CLASSES))


def prepare_data(splits: dict[str, Split], device: torch.device, max_train_images: int = 0) -> TrainData:
    """The splits for training: `max_train_images` training images (0: all) spread over the whole set
    (spread_rows: every class of a class-sorted file), copied to `device` once."""
    train = splits["train"]
    if max_train_images and max_train_images < len(train):
        rows = spread_rows(len(train), max_train_images)
        train = Split(train.images[rows], train.labels[rows], train.class_names, train.path)
    return TrainData(train, splits["val"], splits["ood"], to_device(train.images, device))
