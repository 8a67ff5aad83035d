"""The embedded default data set: a deterministic, course-format miniature of the real task.

Users without the course files, the tests and CI need data of the real shape. This module draws 64x64 RGB
images of synthetic objects and writes `train.npz`, `val.npz` and `ood.npz` exactly in the course's format:

    images       uint8 (N, 64, 64, 3), RGB, HWC
    labels       int64 (N,), sparse ids from range(1000) (like ImageNet-1k ids), never 0..C-1
    class_names  str (C,)   class_names[i] names the label class_ids[i]
    class_ids    int64 (C,)
    meta         0-d str array: JSON of the generator settings (preset, spec, seed, version, split)

Everything is readable with np.load(allow_pickle=False). Same seed -> byte-identical files.

The world. A class is what an object IS: one (shape, texture, part) combination, e.g. "striped star with
eyes" (12 shapes x 7 textures x 6 parts = 504 combinations). A seeded permutation of all combinations gives
the in-distribution classes (the first C_id) and the OOD classes (the next C_ood): OOD classes are unseen
combinations of the same building blocks, as in the course where OOD classes are other ImageNet classes.
Texture and parts are drawn in object-local coordinates, so they move, scale and rotate with the object
(utils/shapes.py draws them; this module places, colours, lights and clutters them, and writes the files).

Nuisances (independent per image, what good augmentations should remove): position, scale, rotation, object
colour (random hue/saturation/value; the texture's second tone and the part colour are derived from it, so
colour never identifies the class), lighting (brightness, contrast, a linear illumination gradient),
background clutter (smooth colour gradient, low-contrast blobs, small distractor shapes) and pixel noise.

Speed: numpy, vectorised over the images of one class ("small" takes seconds on a 2-core CPU). Each class of each split has its own random stream, SeedSequence([seed, tag, split, combination]),
so images depend neither on the order of generation nor on the other classes.

CLI: python -m utils.synthetic [--out DIR] [--size small|course] [--seed N] [--force]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from utils.shapes import (CLASS_COMBOS, GRID_X, GRID_Y, IMAGE_SIZE, PARTS, PARTS_BEHIND, PIXEL_CENTRES, PIXELS_PER_UNIT,
                          SHAPES, TEXTURES, class_name, local_coords, soft_mask)

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "ood")
SPLIT_FILES = {"train": "train.npz", "val": "val.npz", "ood": "ood.npz"}   # the course's names (utils.data reads them)
DEFAULT_OUT_DIR = "cs461_assignment1_data"                                 # also the local default data folder
LABEL_RANGE = 1000                  # labels are distinct ids drawn from range(1000), like ImageNet-1k ids
PROGRESS_BAR_MIN_IMAGES = 20_000    # a progress bar only where generation takes long enough to want one

# Fixed words mixed into every SeedSequence, so our streams never coincide with a user's plain seed.
_SEED_TAG = 0xC5461
_WORLD_STREAM = 0
_SPLIT_STREAM = {"train": 1, "val": 2, "ood": 3}

# A fixed zip timestamp (the earliest zip allows): np.savez would embed the current time.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


class SyntheticDataError(ValueError):
    """Generated data on disk does not match what was asked for, or would be overwritten. Says how to fix."""


# ---- Sizes

@dataclass(frozen=True)
class DataSpec:
    """How many classes and images per class each split has: train/val share the same `id_classes` classes,
    ood has `ood_classes` other classes."""
    id_classes: int
    train_per_class: int
    val_per_class: int
    ood_classes: int
    ood_per_class: int

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DataSpec.{name} = {value!r}; expected a positive integer.")
        total = self.id_classes + self.ood_classes
        if total > len(CLASS_COMBOS):
            raise ValueError(f"DataSpec asks for {self.id_classes} ID + {self.ood_classes} OOD = {total} classes; "
                             f"the synthetic world has only {len(CLASS_COMBOS)} (shape, texture, part) "
                             f"combinations. Ask for fewer classes.")

    def split_counts(self, split: str) -> tuple[int, int]:
        """(number of classes, images per class) of one split."""
        _check_split(split)
        return {"train": (self.id_classes, self.train_per_class),
                "val": (self.id_classes, self.val_per_class),
                "ood": (self.ood_classes, self.ood_per_class)}[split]

    def num_images(self) -> int:
        """Total number of images over the three splits."""
        return sum(c * n for c, n in (self.split_counts(s) for s in SPLITS))


SIZES: dict[str, DataSpec] = {
    # Trains meaningfully on a 2-core CPU in a few minutes.
    "small": DataSpec(id_classes=20, train_per_class=150, val_per_class=25, ood_classes=20, ood_per_class=50),
    # The course's sizes: 100,000 train / 10,000 val / 10,000 OOD (speed benchmarks).
    "course": DataSpec(id_classes=200, train_per_class=500, val_per_class=50, ood_classes=200, ood_per_class=50),
}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}; expected one of {SPLITS}.")


# ---- The classes of a seed: which combinations are ID / OOD, and their labels

@dataclass(frozen=True)
class ClassInfo:
    """One class: its position in the seed's permutation, label id, combination and name."""
    combo_index: int
    label: int
    combo: tuple[str, str, str]
    name: str


def world_classes(seed: int = 0) -> list[ClassInfo]:
    """All combinations in the seed's order, each with its label; the first C_id are ID, the next C_ood OOD.
    The label of a combination depends on the seed only (not on the spec), and labels are distinct."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SEED_TAG, _WORLD_STREAM]))
    order = rng.permutation(len(CLASS_COMBOS))
    labels = rng.permutation(LABEL_RANGE)[: len(CLASS_COMBOS)]
    return [ClassInfo(int(i), int(label), CLASS_COMBOS[i], class_name(CLASS_COMBOS[i]))
            for i, label in zip(order, labels)]


def split_classes(split: str, spec: DataSpec, seed: int = 0) -> list[ClassInfo]:
    """The classes of one split: ID classes for train/val, the following OOD classes for ood."""
    _check_split(split)
    classes = world_classes(seed)
    if split == "ood":
        return classes[spec.id_classes: spec.id_classes + spec.ood_classes]
    return classes[: spec.id_classes]


# ---- Colours

def hsv_to_rgb(h, s, v):
    """h, s, v: (n,) in [0, 1] -> (n, 3) float32 RGB in [0, 1]."""
    h6 = (h % 1.0) * 6.0
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32)[None, :] + h6[:, None]) % 6.0
    return (v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def random_colours(rng, n, sat=(0.0, 1.0), val=(0.0, 1.0)):
    """(n, 3) random RGB colours with uniform hue and saturation/value in the given ranges."""
    return hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(*sat, n), rng.uniform(*val, n))


def object_tones(rng, n):
    """The object's colours, all derived from one random colour per image so colour never names the class.
    Returns body (n, 3), second texture tone (n, 3) and part colour (n, 3): a bright body gets a darker
    second tone and dark parts, a dark body lighter ones, so texture and parts always show."""
    value = rng.uniform(0.3, 1.0, n).astype(np.float32)
    body = hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.25, 1.0, n), value)
    bright = (value > 0.62)[:, None]
    contrast = rng.uniform(0.5, 0.75, n).astype(np.float32)[:, None]
    second = np.where(bright, body * (1 - contrast), body + (1 - body) * contrast)
    part_value = np.where(value > 0.62, rng.uniform(0.0, 0.25, n), rng.uniform(0.85, 1.0, n))
    part = hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.0, 0.8, n), part_value.astype(np.float32))
    return body, second.astype(np.float32), part


def composite(canvas, colour, coverage):
    """Paint `colour` over `canvas` where `coverage` is 1, in place.
    canvas: (n, 3, H, W); colour: (n, 3) or (n, 3, H, W); coverage: (n, 1, H, W) in [0, 1]."""
    if colour.ndim == 2:
        colour = colour[:, :, None, None]
    canvas += coverage * (colour - canvas)


# ---- Drawing one class
# The canvas is float32 channels-first (n, 3, H, W) while drawing, so that masks (n, 1, H, W) and colours
# (n, 3, 1, 1) broadcast over long contiguous rows (in HWC numpy's inner loop would run over 3 channels).
# Images are drawn in chunks of RENDER_CHUNK so temporaries stay in the CPU cache. The chunk size is part of
# the generator: changing it changes the random draws, hence the bytes (bump GENERATOR_VERSION).

RENDER_CHUNK = 32
BLOBS = 3
DISTRACTORS = 3
DISTRACTOR_WINDOW = 20      # pixels; a distractor (radius <= 8 px with its soft edge) fits in this window

# Standard normal quantiles of 256 equally likely bins: Gaussian noise from random bytes by table look-up,
# several times faster than rng.standard_normal.
_GAUSS_TABLE = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], dtype=np.float32)


def draw_background(rng, n):
    """Smooth random two-colour gradient plus a few low-contrast blobs: (n, 3, H, W) float32, about [0, 1].
    Every term is separable, colour * f(y) * g(x), so the whole background is one batched matrix product
    (n, H, K) @ (n, K, 3 * W) over K = 3 + BLOBS terms instead of several full-size passes."""
    start = random_colours(rng, n, sat=(0.0, 0.7), val=(0.15, 0.95))
    end = random_colours(rng, n, sat=(0.0, 0.7), val=(0.15, 0.95))
    direction = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    blob_x, blob_y = rng.uniform(-1, 1, (2, n, BLOBS)).astype(np.float32)
    blob_width = rng.uniform(0.2, 0.5, (n, BLOBS)).astype(np.float32)
    blob_tint = rng.uniform(-0.15, 0.15, (n, BLOBS, 3)).astype(np.float32)

    xs, ys = GRID_X.reshape(1, 1, -1), GRID_Y.reshape(1, 1, -1)                 # (1, 1, 64) each
    ones = np.ones((n, 1, IMAGE_SIZE), dtype=np.float32)
    # Gradient: colour(x, y) = mid + 0.35 * (cos(d) x + sin(d) y) * (end - start), written as three terms.
    span = 0.35 * (end - start)
    grad_y = np.concatenate([ones, ones, np.broadcast_to(ys, (n, 1, IMAGE_SIZE))], axis=1)     # (n, 3, H)
    grad_x = np.concatenate([ones, np.broadcast_to(xs, (n, 1, IMAGE_SIZE)), ones], axis=1)     # (n, 3, W)
    grad_colour = np.stack([(start + end) / 2, np.cos(direction)[:, None] * span,
                            np.sin(direction)[:, None] * span], axis=1)                       # (n, 3, 3)
    # Gaussian blobs: exp(-(dx^2 + dy^2) / 2w^2) = exp(-dx^2 / 2w^2) * exp(-dy^2 / 2w^2).
    inv = (1 / (2 * blob_width ** 2))[..., None]
    blob_fy = np.exp(-((ys - blob_y[..., None]) ** 2) * inv)                                 # (n, BLOBS, H)
    blob_fx = np.exp(-((xs - blob_x[..., None]) ** 2) * inv)                                 # (n, BLOBS, W)

    factor_y = np.concatenate([grad_y, blob_fy], axis=1)                                      # (n, K, H)
    factor_x = np.concatenate([grad_x, blob_fx], axis=1)                                      # (n, K, W)
    colour = np.concatenate([grad_colour, blob_tint], axis=1)                                 # (n, K, 3)
    row_terms = (colour[..., None] * factor_x[:, :, None, :]).reshape(n, -1, 3 * IMAGE_SIZE)  # (n, K, 3*W)
    canvas = np.matmul(factor_y.transpose(0, 2, 1), row_terms)                                # (n, H, 3*W)
    canvas = canvas.reshape(n, IMAGE_SIZE, 3, IMAGE_SIZE).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(canvas, dtype=np.float32)


def pixel_window(cx, cy, size):
    """Per-image square windows of `size` pixels around centres (cx, cy), clipped to the image.
    Returns rows (n, size, 1), cols (n, 1, size) integer pixel indices, and the window's pixel centres in
    image units: grid_x (n, 1, size), grid_y (n, size, 1)."""
    col_centre = (cx + 1) * PIXELS_PER_UNIT - 0.5
    row_centre = (1 - cy) * PIXELS_PER_UNIT - 0.5
    offsets = np.arange(size)
    col0 = np.clip(np.round(col_centre).astype(int) - size // 2, 0, IMAGE_SIZE - size)
    row0 = np.clip(np.round(row_centre).astype(int) - size // 2, 0, IMAGE_SIZE - size)
    cols = (col0[:, None] + offsets)[:, None, :]
    rows = (row0[:, None] + offsets)[:, :, None]
    return rows, cols, PIXEL_CENTRES[cols], -PIXEL_CENTRES[rows]


@dataclass
class DistractorLayers:
    """Pre-drawn clutter for n images: DISTRACTORS slots of small windows, painted later chunk by chunk.
    coverage (n, slots, S, S) in [0, 1] (0 where an image has fewer distractors), colour (n, slots, 3),
    rows (n, slots, S, 1) and cols (n, slots, 1, S): where each window lies in the image."""
    coverage: np.ndarray
    colour: np.ndarray
    rows: np.ndarray
    cols: np.ndarray


def draw_distractors(rng, n) -> DistractorLayers:
    """0..DISTRACTORS small solid shapes per image, of random types, poses and colours (clutter).
    They are small (radius 3 to 7 px), solid and without parts, so a class object is never one of them.
    Each is drawn only inside a small window around its centre (a 64x64 pass would be 10x the work), and for
    a whole class at once: grouping images by shape type would cost many tiny numpy calls per chunk."""
    shape_funcs = list(SHAPES.values())
    size = DISTRACTOR_WINDOW
    count = rng.integers(0, DISTRACTORS + 1, n)
    kinds = rng.integers(0, len(shape_funcs), (DISTRACTORS, n))
    cx, cy = rng.uniform(-0.95, 0.95, (2, DISTRACTORS, n)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, (DISTRACTORS, n)).astype(np.float32)
    scale = rng.uniform(0.11, 0.22, (DISTRACTORS, n)).astype(np.float32)
    colour = random_colours(rng, DISTRACTORS * n, sat=(0.0, 1.0), val=(0.1, 1.0)).reshape(DISTRACTORS, n, 3)
    # Flatten (slot, image) pairs so each shape type is evaluated once for the whole class.
    kinds, cx, cy, angle, scale = (a.reshape(-1) for a in (kinds, cx, cy, angle, scale))
    active = (np.arange(DISTRACTORS)[:, None] < count[None, :]).reshape(-1)
    rows, cols, grid_x, grid_y = pixel_window(cx, cy, size)
    coverage = np.zeros((DISTRACTORS * n, size, size), dtype=np.float32)
    for kind, shape in enumerate(shape_funcs):
        idx = np.flatnonzero((kinds == kind) & active)
        if len(idx):
            u, v = local_coords(cx[idx], cy[idx], angle[idx], scale[idx], grid_x[idx], grid_y[idx])
            coverage[idx] = soft_mask(shape(u, v), scale[idx])[:, 0]

    def image_major(a):                     # (slots * n, ...) -> (n, slots, ...)
        return np.swapaxes(a.reshape(DISTRACTORS, n, *a.shape[1:]), 0, 1)
    return DistractorLayers(image_major(coverage), np.swapaxes(colour, 0, 1), image_major(rows), image_major(cols))


def paint_distractors(canvas, layers: DistractorLayers, first: int) -> None:
    """Paint the distractors of images first .. first + len(canvas) over `canvas` (m, 3, H, W), in place."""
    chunk = slice(first, first + len(canvas))
    images = np.arange(len(canvas))[:, None, None]
    for slot in range(DISTRACTORS):
        rows, cols = layers.rows[chunk, slot], layers.cols[chunk, slot]
        coverage = layers.coverage[chunk, slot, :, :, None]
        colour = layers.colour[chunk, slot, None, None, :]
        # Advanced indices around a slice put their dimensions first: the patch is (m, S, S, 3).
        patch = canvas[images, :, rows, cols]
        patch += coverage * (colour - patch)
        canvas[images, :, rows, cols] = patch


def draw_object(rng, canvas, combo):
    """Paint the class object (shape with texture and part) over `canvas` (n, 3, H, W) in place."""
    n = len(canvas)
    shape_fn, texture_fn, part_fn = SHAPES[combo[0]], TEXTURES[combo[1]], PARTS[combo[2]]
    cx, cy = rng.uniform(-0.3, 0.3, (2, n)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    scale = rng.uniform(0.42, 0.64, n).astype(np.float32)
    body_colour, second_colour, part_colour = object_tones(rng, n)

    u, v = local_coords(cx, cy, angle, scale)
    body = shape_fn(u, v)
    part = part_fn(u, v, body) if part_fn is not None else None
    if part is not None and combo[2] in PARTS_BEHIND:
        composite(canvas, part_colour, soft_mask(part, scale))
    tone = texture_fn(u, v)
    if tone is None:
        fill = body_colour
    else:
        fill = body_colour[:, :, None, None] + tone[:, None] * (second_colour - body_colour)[:, :, None, None]
    composite(canvas, fill, soft_mask(body, scale))
    if part is not None and combo[2] not in PARTS_BEHIND:
        composite(canvas, part_colour, soft_mask(part, scale))


def apply_lighting_and_noise(rng, canvas):
    """Global contrast and brightness, a linear illumination gradient and Gaussian pixel noise, in place:
    out = ((x - 0.5) * contrast + 0.5 + brightness) * illumination + noise, folded into one multiply-add."""
    n = len(canvas)
    contrast = rng.uniform(0.65, 1.25, n).astype(np.float32)[:, None, None, None]
    brightness = rng.uniform(-0.15, 0.15, n).astype(np.float32)[:, None, None, None]
    direction = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    strength = rng.uniform(0.0, 0.35, n).astype(np.float32)[:, None, None]
    illumination = (1.0 + strength * (np.cos(direction) * GRID_X + np.sin(direction) * GRID_Y))[:, None]
    canvas *= contrast * illumination
    canvas += (0.5 + brightness - 0.5 * contrast) * illumination
    noise_std = rng.uniform(0.01, 0.05, n).astype(np.float32)[:, None, None, None]
    noise = _GAUSS_TABLE.take(rng.integers(0, 256, canvas.shape, dtype=np.uint8))
    noise *= noise_std
    canvas += noise


def to_uint8_hwc(canvas):
    """float (n, 3, H, W) in [0, 1] -> uint8 (n, H, W, 3), rounded and clipped."""
    canvas *= 255.0
    canvas += 0.5
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8).transpose(0, 2, 3, 1)


def render_class(combo: tuple[str, str, str], n: int, rng: np.random.Generator) -> np.ndarray:
    """n images of one class: uint8 (n, 64, 64, 3), each with its own pose, colours, lighting and clutter."""
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    distractors = draw_distractors(rng, n)
    for start in range(0, n, RENDER_CHUNK):
        m = min(RENDER_CHUNK, n - start)
        canvas = draw_background(rng, m)
        paint_distractors(canvas, distractors, start)
        draw_object(rng, canvas, combo)
        apply_lighting_and_noise(rng, canvas)
        images[start:start + m] = to_uint8_hwc(canvas)
    return images


def class_rng(seed: int, split: str, combo_index: int) -> np.random.Generator:
    """The random stream of one class in one split: independent of generation order and of other classes."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SEED_TAG, _SPLIT_STREAM[split], combo_index]))


# ---- Splits and files

def generate_split(split: str, spec: DataSpec | str, seed: int = 0, progress: bool = False) -> dict:
    """One split in the course format. spec: a DataSpec or a preset name of SIZES.
    Returns {"images": uint8 (N, 64, 64, 3), "labels": int64 (N,), "class_names": str (C,),
    "class_ids": int64 (C,)}, N = C * images per class, grouped by class in class order."""
    _, spec = resolve_spec(spec)
    classes = split_classes(split, spec, seed)
    _, per_class = spec.split_counts(split)
    images = np.empty((len(classes) * per_class, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    shown = classes
    if progress:
        from utils.progress import progress_bar
        shown = progress_bar(classes, desc=f"{split} classes", unit="class", leave=False)
    for i, info in enumerate(shown):
        images[i * per_class: (i + 1) * per_class] = render_class(info.combo, per_class,
                                                                  class_rng(seed, split, info.combo_index))
    class_ids = np.array([c.label for c in classes], dtype=np.int64)
    return {"images": images,
            "labels": np.repeat(class_ids, per_class),
            "class_names": np.array([c.name for c in classes], dtype=str),
            "class_ids": class_ids}


def resolve_spec(size: str | DataSpec) -> tuple[str, DataSpec]:
    """(preset name or 'custom', spec) for a preset name or an explicit DataSpec."""
    if isinstance(size, DataSpec):
        for name, spec in SIZES.items():
            if spec == size:
                return name, spec
        return "custom", size
    if size not in SIZES:
        raise ValueError(f"size {size!r}; expected one of {sorted(SIZES)} or a DataSpec(...).")
    return size, SIZES[size]


def make_meta(split: str, size: str | DataSpec, seed: int) -> dict:
    """The generator settings stored in each file's `meta` key (as JSON)."""
    name, spec = resolve_spec(size)
    return {"generator": "utils.synthetic", "version": GENERATOR_VERSION, "size": name, "spec": asdict(spec),
            "seed": int(seed), "split": split}


def write_npz_deterministic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed npz whose bytes depend only on `arrays`, atomically: fixed zip timestamps,
    ZIP_STORED so np.load reads fast, written to a temporary file in the same folder and renamed, so an
    interrupted write never leaves a half file."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
            for key, array in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE_TIME)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                array = np.asarray(array)
                if not array.flags.c_contiguous:        # (not ascontiguousarray always: it makes 0-d 1-d)
                    array = np.ascontiguousarray(array)
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_split(out_dir: str | os.PathLike, split: str, size: str | DataSpec = "small", seed: int = 0,
                progress: bool = False) -> Path:
    """Generate one split and write it to out_dir/<split>.npz (overwriting). Returns the path."""
    arrays = generate_split(split, size, seed, progress=progress)
    arrays["meta"] = np.array(json.dumps(make_meta(split, size, seed), sort_keys=True))
    path = Path(out_dir) / SPLIT_FILES[split]
    write_npz_deterministic(path, arrays)
    return path


def write_dataset(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, size: str | DataSpec = "small", seed: int = 0,
                  overwrite: bool = False, progress: bool = True) -> dict[str, Path]:
    """Generate train.npz, val.npz and ood.npz in out_dir. Returns {split: path}.
    Refuses (SyntheticDataError, before generating anything) if one of the files exists, unless overwrite.
    progress: show a progress bar over classes for sizes large enough to take a while (course)."""
    _, spec = resolve_spec(size)
    out_dir = Path(out_dir)
    paths = {split: out_dir / SPLIT_FILES[split] for split in SPLITS}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise SyntheticDataError(
            f"{', '.join(existing)} already exist(s); refusing to overwrite. Expected an empty or missing "
            f"folder. Fix: pass overwrite=True (CLI: --force), choose another folder, or delete the file(s).")
    out_dir.mkdir(parents=True, exist_ok=True)
    show_bar = progress and spec.num_images() >= PROGRESS_BAR_MIN_IMAGES
    for split in SPLITS:
        write_split(out_dir, split, spec, seed, progress=show_bar)
    return paths


def read_meta(path: str | os.PathLike) -> dict | None:
    """The generator settings stored in a file, or None for a file without `meta` (e.g. the course's data).
    SyntheticDataError if the file is not a readable npz or its `meta` is not the generator's JSON."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "meta" not in archive.files:
                return None
            meta = json.loads(str(archive["meta"][()]))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, AttributeError) as error:
        raise SyntheticDataError(
            f"{path}: cannot read it as an npz data file with generator metadata ({type(error).__name__}: "
            f"{error}). Expected a file written by utils.synthetic or the course's data. Fix: delete the file "
            f"(it is regenerated on the next run) or replace it with a complete copy.") from error
    if not isinstance(meta, dict):
        raise SyntheticDataError(f"{path}: 'meta' holds {meta!r}; expected a JSON object of generator settings. "
                                 f"Fix: delete the file to regenerate it.")
    return meta


def is_generated(path: str | os.PathLike) -> bool:
    """True when an npz file was written by this generator (it carries our `meta` key)."""
    try:
        return read_meta(path) is not None
    except SyntheticDataError:      # unreadable as ours: load_npz reports what is wrong with it
        return False


def _describe(meta: dict) -> str:
    """One line naming the settings of a generated file, e.g. for error messages."""
    spec = meta.get("spec")
    spec = ", ".join(f"{k}={spec[k]}" for k in sorted(spec)) if isinstance(spec, dict) else spec
    return f"size={meta.get('size')!r} seed={meta.get('seed')!r} version={meta.get('version')!r} ({spec})"


def ensure_default_data(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, size: str | DataSpec = "small",
                        seed: int = 0) -> Path:
    """Make sure out_dir holds train/val/ood.npz; generate only the missing ones. Returns out_dir.
    Prints one line saying what it did. Existing generated files must match size and seed (else
    SyntheticDataError saying how to fix it); files without `meta` (the real course data) are left alone."""
    name, spec = resolve_spec(size)
    out_dir = Path(out_dir)
    found, foreign, missing = [], [], []
    for split in SPLITS:
        path = out_dir / SPLIT_FILES[split]
        if not path.exists():
            missing.append(split)
            continue
        meta = read_meta(path)
        if meta is None:
            foreign.append(path.name)
            continue
        expected = make_meta(split, spec, seed)
        if any(meta.get(k) != expected[k] for k in ("version", "spec", "seed")):
            raise SyntheticDataError(
                f"{path} holds a different generated data set. Expected {_describe(expected)}, found "
                f"{_describe(meta)}. Fix: delete the folder {out_dir} to regenerate it, or pass the matching "
                f"size/seed (size={meta.get('size')!r}, seed={meta.get('seed')!r}).")
        found.append(path.name)

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in missing:
        write_split(out_dir, split, spec, seed, progress=spec.num_images() >= PROGRESS_BAR_MIN_IMAGES)
    elapsed = time.perf_counter() - start

    parts = []
    if missing:
        parts.append(f"generated {', '.join(SPLIT_FILES[s] for s in missing)} ({name}, seed {seed}) "
                     f"in {elapsed:.1f} s")
    if found:
        parts.append(f"found {', '.join(found)}")
    if foreign:
        parts.append(f"found {', '.join(foreign)} without generator metadata (not the generated set: "
                     f"left as is)")
    print(f"Default data in {out_dir}: " + "; ".join(parts), flush=True)
    return out_dir


# ---- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.synthetic",
                                     description="Generate the embedded default data set (course format).")
    parser.add_argument("--out", default=DEFAULT_OUT_DIR, help=f"output folder (default ./{DEFAULT_OUT_DIR})")
    parser.add_argument("--size", default="small", choices=sorted(SIZES), help="size preset (default small)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        paths = write_dataset(args.out, args.size, args.seed, overwrite=args.force, progress=True)
    except SyntheticDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {SIZES[args.size].num_images():,} images ({args.size}, seed {args.seed}) to "
          f"{', '.join(str(p) for p in paths.values())} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
