"""benchmarks/tiny64_packs.py: packs of JPEG bytes cut here, decoded on a GPU machine into course-format files.

The real pool lives outside the repository, which tests must not need: a small pool of generated JPEGs in the same format
stands in for it, and a stub of build.py's `group_names` (the only part `write_pack` calls).
"""
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import tiny64_packs  # noqa: E402


def fake_pool(n_per_class: int = 4, classes: int = 3) -> dict:
    """A pool like tiny64's: JPEG bytes + offsets, labels, group (0 ID, 1 OOD), class_names (ID first)."""
    rng = np.random.default_rng(0)
    blobs, labels, groups = [], [], []
    for group in (0, 1):
        for c in range(classes):
            for _ in range(n_per_class):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
                blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
                labels.append(c)
                groups.append(group)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    names = np.array([f"id{c}" for c in range(classes)] + [f"ood{c}" for c in range(classes)])
    return {"jpeg": np.concatenate(blobs), "offsets": offsets, "labels": np.array(labels, np.int64),
            "group": np.array(groups), "class_names": names}


def stub_build(classes: int = 3):
    return SimpleNamespace(group_names=lambda pool, in_id: pool["class_names"][:classes] if in_id
                           else pool["class_names"][classes:])


def decoded(pool, idx):
    return tiny64_packs.decode(pool["jpeg"], pool["offsets"], np.asarray(idx))


def test_packs_round_trip_into_course_files(tmp_path):
    pool, build = fake_pool(), stub_build()
    # ID images are pool rows 0..11 (3 classes x 4), OOD rows 12..23. Train slices 0:2 and 2:4 of each class
    # go into different packs, as two runs on the GPU machine would carry them.
    first = {"train": np.array([0, 1, 4, 5, 8, 9]), "val": np.array([3, 7, 11]),
             "ood_draw0": np.array([12, 16, 20]), "ood_draw1": np.array([13, 16, 21])}
    second = {"train": np.array([2, 3, 6, 7, 10, 11])}
    tiny64_packs.write_pack(tmp_path / "a.npz", pool, build, first)
    tiny64_packs.write_pack(tmp_path / "b.npz", pool, build, second)
    with np.load(tmp_path / "a.npz") as pack:
        assert len(pack["offsets"]) - 1 == 14      # 6 + 3 + 6 rows, but row 16 is in both draws: stored once

    tiny64_packs.unpack([tmp_path / "a.npz", tmp_path / "b.npz"], tmp_path / "out")
    train = np.load(tmp_path / "out" / "train.npz")
    order = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]   # class by class, each class's slices in pool order
    assert train["images"].dtype == np.uint8 and train["images"].shape == (12, 64, 64, 3)
    assert np.array_equal(train["images"], decoded(pool, order))
    assert train["labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert train["class_names"].tolist() == ["id0", "id1", "id2"]
    ood0, ood = np.load(tmp_path / "out" / "ood_draw0.npz"), np.load(tmp_path / "out" / "ood.npz")
    assert np.array_equal(ood0["images"], ood["images"]) and np.array_equal(ood0["images"], decoded(pool, [12, 16, 20]))
    assert ood0["class_names"].tolist() == ["ood0", "ood1", "ood2"]
    assert np.array_equal(np.load(tmp_path / "out" / "ood_draw1.npz")["images"], decoded(pool, [13, 16, 21]))
    assert np.array_equal(np.load(tmp_path / "out" / "val.npz")["images"], decoded(pool, [3, 7, 11]))


def test_train_ranges_parse():
    assert tiny64_packs.parse_range("150:400") == (150, 400)
    assert tiny64_packs.parse_range(":175") == (0, 175)
