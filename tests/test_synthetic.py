"""The embedded default data set (utils/synthetic.py): format, determinism, realism, learnability, file handling."""
import hashlib
import json
import time

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from utils.shapes import CLASS_COMBOS, PARTS, SHAPES, TEXTURES, local_coords
from utils.synthetic import (SIZES, SPLIT_FILES, DataSpec, SyntheticDataError, ensure_default_data, generate_split,
                             main, read_meta, write_dataset, write_npz_deterministic)

# Tiny: a few classes and images, for tests that only need real shapes (well under a second to generate).
TINY = DataSpec(id_classes=4, train_per_class=6, val_per_class=3, ood_classes=3, ood_per_class=5)
FILE_KEYS = {"images", "labels", "class_names", "class_ids", "meta"}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path):
    """All arrays of one file, read without pickle (what the course's loaders do)."""
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    write_dataset(out, TINY, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """The default "small" preset, written through the CLI (so the CLI is tested by the same generation)."""
    out = tmp_path_factory.mktemp("small")
    start = time.perf_counter()
    assert main(["--out", str(out)]) == 0
    print(f"\n'small' generated via the CLI in {time.perf_counter() - start:.1f} s")
    return out


# ----------------------------------------------------------------------------------------------------------
# The world and the presets
# ----------------------------------------------------------------------------------------------------------

def test_world_has_enough_distinct_classes_for_the_course_size():
    assert len(CLASS_COMBOS) >= 400
    assert len(set(CLASS_COMBOS)) == len(CLASS_COMBOS)
    course = SIZES["course"]
    assert course.id_classes + course.ood_classes <= len(CLASS_COMBOS)


def test_presets_have_the_documented_sizes():
    assert SIZES["small"] == DataSpec(20, 150, 25, 20, 50)
    assert SIZES["course"] == DataSpec(200, 500, 50, 200, 50)
    assert [SIZES["course"].split_counts(s) for s in ("train", "val", "ood")] == [(200, 500), (200, 50), (200, 50)]


def test_every_building_block_draws_something_in_float32():
    """Each shape covers a sensible part of its frame, each texture varies, each part has area; all float32."""
    one = np.ones(1, dtype=np.float32)
    u, v = local_coords(0 * one, 0 * one, 0 * one, one / 1.5)          # local frame [-1.5, 1.5]^2
    for name, shape in SHAPES.items():
        body = shape(u, v)
        assert body.dtype == np.float32, name
        assert 0.08 < (body < 0).mean() < 0.5, (name, (body < 0).mean())
        assert body[0, 0, 0] > 0 and body[0, -1, -1] > 0, name               # corners are outside
        for part_name, part in PARTS.items():
            if part is not None:
                distance = part(u, v, body)
                assert distance.dtype == np.float32 and (distance < 0).mean() > 0.005, (name, part_name)
    for name, texture in TEXTURES.items():
        tone = texture(u, v)
        assert tone is None if name == "solid" else (tone.dtype == np.float32 and tone.std() > 0.2), name


def test_dataspec_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="combinations"):
        DataSpec(400, 1, 1, 200, 1)
    with pytest.raises(ValueError, match="positive"):
        DataSpec(0, 1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_files(tiny_dir, tmp_path):
    write_dataset(tmp_path, TINY, seed=0, progress=False)
    for name in SPLIT_FILES.values():
        assert sha256(tmp_path / name) == sha256(tiny_dir / name), name


def test_different_seed_gives_different_images(tiny_dir, tmp_path):
    write_dataset(tmp_path, TINY, seed=1, progress=False)
    for name in SPLIT_FILES.values():
        a, b = load(tiny_dir / name)["images"], load(tmp_path / name)["images"]
        assert a.shape == b.shape and not np.array_equal(a, b), name


def test_a_class_does_not_depend_on_the_other_classes_generated():
    """Each class has its own random stream: more classes in the spec leave the first ones unchanged."""
    few = generate_split("train", DataSpec(2, 5, 1, 1, 1), seed=3)
    more = generate_split("train", DataSpec(5, 5, 1, 1, 1), seed=3)
    np.testing.assert_array_equal(few["images"], more["images"][:10])
    np.testing.assert_array_equal(few["class_ids"], more["class_ids"][:2])


# ----------------------------------------------------------------------------------------------------------
# Format
# ----------------------------------------------------------------------------------------------------------

def test_files_are_in_the_course_format(tiny_dir):
    files = {split: load(tiny_dir / name) for split, name in SPLIT_FILES.items()}
    for split, data in files.items():
        assert set(data) == FILE_KEYS, split
        images, labels = data["images"], data["labels"]
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (64, 64, 3), split
        assert labels.dtype == np.int64 and labels.shape == (len(images),), split
        assert data["class_ids"].dtype == np.int64 and data["class_names"].dtype.kind == "U", split
        # class_names[i] names class_ids[i]; every label is one of class_ids, names are distinct.
        assert len(data["class_names"]) == len(data["class_ids"]) == len(set(data["class_ids"].tolist()))
        assert len(set(data["class_names"].tolist())) == len(data["class_names"])
        assert set(labels.tolist()) == set(data["class_ids"].tolist()), split
        classes, per_class = TINY.split_counts(split)
        ids, counts = np.unique(labels, return_counts=True)
        assert len(ids) == classes and (counts == per_class).all(), split
        # Labels are sparse ids like ImageNet's, never 0..C-1.
        assert ids.min() >= 0 and ids.max() < 1000
        assert set(ids.tolist()) != set(range(classes)), split
        meta = json.loads(str(data["meta"][()]))
        assert data["meta"].shape == ()
        assert meta["seed"] == 0 and meta["split"] == split and meta["spec"]["id_classes"] == TINY.id_classes

    assert np.array_equal(files["train"]["class_ids"], files["val"]["class_ids"])
    assert list(files["train"]["class_names"]) == list(files["val"]["class_names"])
    assert not set(files["train"]["class_ids"].tolist()) & set(files["ood"]["class_ids"].tolist())
    assert not set(files["train"]["class_names"].tolist()) & set(files["ood"]["class_names"].tolist())


def test_class_names_describe_shape_texture_and_part(tiny_dir):
    names = load(tiny_dir / "train.npz")["class_names"].tolist()
    textures = {"solid", "striped", "checkered", "dotted", "ringed", "wavy", "grid-patterned"}
    assert all(name.split()[0] in textures for name in names), names


def test_read_meta_names_the_settings(tiny_dir):
    meta = read_meta(tiny_dir / "ood.npz")
    assert meta["size"] == "custom" and meta["seed"] == 0 and meta["generator"] == "utils.synthetic"


# ----------------------------------------------------------------------------------------------------------
# The images carry real variation
# ----------------------------------------------------------------------------------------------------------

def test_images_are_not_degenerate():
    data = generate_split("train", DataSpec(6, 30, 1, 1, 1), seed=0)
    images = data["images"].astype(np.float32)
    assert images.std() > 40                                   # overall contrast, uint8 units
    per_pixel_std = images.std(axis=0).mean(axis=-1)           # (64, 64): variation across images
    centre, corner = per_pixel_std[24:40, 24:40].mean(), per_pixel_std[:8, :8].mean()
    assert centre > 35 and corner > 25, (centre, corner)       # both the object area and the background vary
    assert images.min() < 30 and images.max() > 225            # uses the range


def test_colour_does_not_identify_the_class():
    """k-NN on each image's mean colour is near chance: object colour is a nuisance, not a class cue."""
    spec = DataSpec(8, 60, 30, 1, 1)
    train, val = generate_split("train", spec, seed=0), generate_split("val", spec, seed=0)
    mean_colour = lambda d: d["images"].reshape(len(d["images"]), -1, 3).mean(axis=1)  # noqa: E731
    knn = KNeighborsClassifier(n_neighbors=5).fit(mean_colour(train), train["labels"])
    accuracy = knn.score(mean_colour(val), val["labels"])
    print(f"\nmean-colour k-NN accuracy {accuracy:.3f} (chance {1 / spec.id_classes:.3f})")
    assert accuracy < 1 / spec.id_classes + 0.12, accuracy


# ----------------------------------------------------------------------------------------------------------
# Learnability: a quick supervised CNN beats raw pixels by a wide margin
# ----------------------------------------------------------------------------------------------------------

def tiny_cnn(num_classes):
    """A 4x4 patch stem then three small conv blocks: 3 s an epoch of "small" on two idle CPU cores.

    Returns (features (N, 128), classifier) sharing the same layers.
    """
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    features = nn.Sequential(nn.Conv2d(3, 32, 4, 4), nn.BatchNorm2d(32), nn.ReLU(),          # 64 -> 16 px
                             block(32, 48), nn.MaxPool2d(2), block(48, 96), nn.MaxPool2d(2), block(96, 128),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return features, nn.Sequential(features, nn.Linear(128, num_classes))


def to_tensor(images):
    """uint8 (N, 64, 64, 3) -> float (N, 3, 64, 64) in [0, 1], as the course's ToTensor()."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def knn_accuracy(train_x, train_y, test_x, test_y):
    """The course's k-NN probe: k=5, Euclidean, uniform vote."""
    return KNeighborsClassifier(n_neighbors=5).fit(train_x, train_y).score(test_x, test_y)


def test_supervised_features_beat_raw_pixels(small_dir):
    train, val = load(small_dir / "train.npz"), load(small_dir / "val.npz")
    chance = 1 / len(train["class_ids"])
    raw = knn_accuracy(train["images"].reshape(len(train["images"]), -1), train["labels"],
                       val["images"].reshape(len(val["images"]), -1), val["labels"])

    torch.manual_seed(0)
    x, xv = to_tensor(train["images"]), to_tensor(val["images"])
    y = torch.from_numpy(np.searchsorted(np.sort(train["class_ids"]), train["labels"]))   # ids -> 0..C-1
    features, model = tiny_cnn(len(train["class_ids"]))
    epochs, batch = 4, 64
    steps = epochs * ((len(x) + batch - 1) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch):
            # Right-angle turns and flips: cheap augmentations that match the data's random rotations.
            xb = torch.rot90(x[idx], int(torch.randint(4, ())), (2, 3))
            xb = xb.flip(3) if torch.rand(()) < 0.5 else xb
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        train_f = torch.cat([features(b) for b in x.split(256)]).numpy()
        val_f = torch.cat([features(b) for b in xv.split(256)]).numpy()
    supervised = knn_accuracy(train_f, train["labels"], val_f, val["labels"])
    print(f"\nval k-NN accuracy: chance {chance:.3f}, raw pixels {raw:.3f}, tiny supervised CNN {supervised:.3f} "
          f"({epochs} epochs in {time.perf_counter() - start:.1f} s)")
    assert raw < chance + 0.08, "raw pixels should be close to chance: nuisances must dominate pixel distances"
    # Measured (2 CPU cores): chance 0.05, raw pixels 0.064, this CNN 0.45 after 4 epochs (0.81 after 15).
    assert supervised >= raw + 0.20, (chance, raw, supervised)


# ----------------------------------------------------------------------------------------------------------
# Files: refusing to overwrite, atomic writes, ensure_default_data
# ----------------------------------------------------------------------------------------------------------

def test_cli_wrote_the_small_preset(small_dir):
    for split, name in SPLIT_FILES.items():
        meta = read_meta(small_dir / name)
        assert meta["size"] == "small" and meta["seed"] == 0 and meta["split"] == split


def test_write_dataset_refuses_to_overwrite(tiny_dir, tmp_path):
    write_dataset(tmp_path, TINY, seed=0, progress=False)
    with pytest.raises(SyntheticDataError, match="train.npz.*overwrite"):
        write_dataset(tmp_path, TINY, seed=1, progress=False)
    assert sha256(tmp_path / "train.npz") == sha256(tiny_dir / "train.npz")      # untouched
    write_dataset(tmp_path, TINY, seed=1, overwrite=True, progress=False)
    assert sha256(tmp_path / "train.npz") != sha256(tiny_dir / "train.npz")


def test_cli_refuses_to_overwrite_without_force(tiny_dir, tmp_path, capsys):
    (tmp_path / "val.npz").write_bytes(b"x")
    assert main(["--out", str(tmp_path)]) == 1
    assert "val.npz" in capsys.readouterr().err
    assert (tmp_path / "val.npz").read_bytes() == b"x"


def test_npz_write_is_atomic(tmp_path):
    """A failure while writing leaves neither the target file nor a temporary file behind."""
    with pytest.raises(ValueError):
        write_npz_deterministic(tmp_path / "bad.npz", {"ok": np.zeros(3), "bad": np.array([{}], dtype=object)})
    assert list(tmp_path.iterdir()) == []
    write_npz_deterministic(tmp_path / "good.npz", {"a": np.arange(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["good.npz"]


def test_ensure_default_data_generates_then_reuses(tmp_path, capsys):
    out = tmp_path / "data"
    assert ensure_default_data(out, TINY, seed=0) == out
    assert "generated train.npz, val.npz, ood.npz" in capsys.readouterr().out
    mtimes = {name: (out / name).stat().st_mtime_ns for name in SPLIT_FILES.values()}

    ensure_default_data(out, TINY, seed=0)
    assert "found train.npz, val.npz, ood.npz" in capsys.readouterr().out
    assert {name: (out / name).stat().st_mtime_ns for name in SPLIT_FILES.values()} == mtimes

    (out / "val.npz").unlink()                              # only the missing file is regenerated
    ensure_default_data(out, TINY, seed=0)
    said = capsys.readouterr().out
    assert "generated val.npz" in said and "found train.npz, ood.npz" in said
    assert (out / "train.npz").stat().st_mtime_ns == mtimes["train.npz"]


def test_ensure_default_data_rejects_other_generated_data(tiny_dir):
    with pytest.raises(SyntheticDataError) as error:
        ensure_default_data(tiny_dir, TINY, seed=1)
    message = str(error.value)
    assert "train.npz" in message and "seed=1" in message and "seed=0" in message and "delete" in message
    with pytest.raises(SyntheticDataError, match="size='custom'"):
        ensure_default_data(tiny_dir, "small", seed=0)


def test_ensure_default_data_names_an_unreadable_file(tmp_path):
    (tmp_path / "ood.npz").write_bytes(b"half a file")
    with pytest.raises(SyntheticDataError, match="ood.npz.*delete"):
        ensure_default_data(tmp_path, TINY, seed=0)


def test_ensure_default_data_leaves_foreign_files_alone(tmp_path, capsys):
    """Files without `meta` (such as the real course data) are not the generated set: never touched."""
    np.savez(tmp_path / "train.npz", images=np.zeros((2, 64, 64, 3), np.uint8), labels=np.array([3, 5]))
    before = sha256(tmp_path / "train.npz")
    ensure_default_data(tmp_path, TINY, seed=0)
    said = capsys.readouterr().out
    assert "train.npz without generator metadata" in said and "generated val.npz, ood.npz" in said
    assert sha256(tmp_path / "train.npz") == before
