"""Loading and validating course-format npz files: every bad input gives a DataError that says what and how."""
import tracemalloc

import numpy as np
import pytest
import torch
from torchvision.transforms import ToTensor

from utils import data
from utils.data import DataError, ImageDatasetNPZ, load_npz, ood_split


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_arrays(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), np.array([7, 7, 312, 312, 998, 998][:n])


def test_good_file_loads_with_names(tmp_path):
    images, labels = good_arrays()
    path = write(tmp_path / "train.npz", images=images, labels=labels, class_names=np.array(["a", "b", "c"]),
                 class_ids=np.array([7, 312, 998]))
    split = load_npz(path)
    assert split.images.dtype == np.uint8 and split.images.shape == (6, 64, 64, 3)
    assert split.labels.dtype == np.int64 and list(split.classes) == [7, 312, 998]
    assert split.name_of(312) == "b" and split.name_of(5) == "5"
    np.testing.assert_array_equal(split.images, images)


def test_class_names_indexed_by_label_without_ids(tmp_path):
    images, _ = good_arrays(4)
    split = load_npz(write(tmp_path / "v.npz", images=images, labels=np.array([0, 1, 1, 2]),
                           class_names=np.array(["cat", "dog", "eel"])))
    assert split.name_of(2) == "eel"


@pytest.mark.parametrize("case, make, expected", [
    ("float in [0,1]", lambda im, lb: dict(images=im / 255.0, labels=lb), ["float64", "uint8", "* 255"]),
    ("int64 pixels", lambda im, lb: dict(images=im.astype(np.int64), labels=lb), ["int64", "astype(np.uint8)"]),
    ("int pixels above 255", lambda im, lb: dict(images=im.astype(np.int32) * 4, labels=lb),
     ["int32", "rescale the values to 0..255"]),
    ("float pixels in 0..255", lambda im, lb: dict(images=im.astype(np.float32), labels=lb),
     ["float32", "np.clip(images, 0, 255).round().astype(np.uint8)"]),
    ("CHW layout", lambda im, lb: dict(images=im.transpose(0, 3, 1, 2), labels=lb), ["CHW", "transpose(0, 2, 3, 1)"]),
    ("wrong size", lambda im, lb: dict(images=im[:, :32, :32], labels=lb), ["32x32", "64x64"]),
    ("3-d images", lambda im, lb: dict(images=im[..., 0], labels=lb), ["4 dimensions"]),
    ("count mismatch", lambda im, lb: dict(images=im, labels=lb[:4]), ["6 images but 4 labels"]),
    ("empty set", lambda im, lb: dict(images=im[:0], labels=lb[:0]), ["empty"]),
    ("NaN pixels", lambda im, lb: dict(images=np.where(im > 250, np.nan, im / 255.0), labels=lb), ["NaN"]),
    ("NaN labels", lambda im, lb: dict(images=im, labels=np.array([1.0, np.nan, 2, 2, 3, 3])), ["NaN", "labels"]),
    ("float labels", lambda im, lb: dict(images=im, labels=lb.astype(np.float32)), ["labels", "astype(np.int64)"]),
    ("2-d labels", lambda im, lb: dict(images=im, labels=lb[:, None]), ["reshape(-1)"]),
    ("missing labels", lambda im, lb: dict(images=im, targets=lb), ["'labels'", "found keys ['images', 'targets']"]),
    ("missing images", lambda im, lb: dict(x=im, labels=lb), ["'images'", "['labels', 'x']"]),
])
def test_bad_input_gives_clear_error(tmp_path, case, make, expected):
    images, labels = good_arrays()
    path = write(tmp_path / "bad.npz", **make(images, labels))
    with pytest.raises(DataError) as info:
        load_npz(path)
    message = str(info.value)
    assert str(path) in message, f"{case}: the message must name the file"
    for part in expected:
        assert part in message, f"{case}: {part!r} not in {message!r}"


def test_not_an_npz(tmp_path):
    text = tmp_path / "train.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a readable npz"):
        load_npz(text)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(DataError, match="single .npy array of shape"):
        load_npz(single)


def test_truncated_npz(tmp_path):
    images, labels = good_arrays()
    path = write(tmp_path / "t.npz", images=images, labels=labels)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="t.npz"):
        load_npz(path)


def test_pickled_object_array_refused(tmp_path):
    images, labels = good_arrays()
    path = write(tmp_path / "p.npz", images=images, labels=labels.astype(object))
    with pytest.raises(DataError, match="p.npz"):
        load_npz(path)


def test_missing_file_names_searched_paths(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(data, "HUB_DATA_DIR", tmp_path / "no-hub")
    with pytest.raises(DataError) as info:
        data.load_split("train")
    message = str(info.value)
    assert str(tmp_path / "train.npz") in message and "CS461_DATA_DIR" in message
    assert "no-hub" in message and "explicit argument: not set" in message


def test_resolution_order(tmp_path, monkeypatch, capsys):
    explicit, env, hub = tmp_path / "explicit", tmp_path / "env", tmp_path / "hub"
    for d in (explicit, env, hub):
        d.mkdir()
    monkeypatch.setattr(data, "HUB_DATA_DIR", hub)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env))
    assert data.resolve_data_dir(explicit) == explicit
    assert "explicit argument" in capsys.readouterr().out
    assert data.resolve_data_dir() == env
    assert "$CS461_DATA_DIR" in capsys.readouterr().out
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.resolve_data_dir() == hub
    assert "course hub" in capsys.readouterr().out
    monkeypatch.setattr(data, "HUB_DATA_DIR", tmp_path / "absent")
    assert data.resolve_data_dir() == data.LOCAL_DATA_DIR
    assert "local default" in capsys.readouterr().out


def test_explicit_missing_directory_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        data.resolve_data_dir(tmp_path / "nope")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nope-env"))
    with pytest.raises(DataError, match="CS461_DATA_DIR"):
        data.resolve_data_dir()


def test_ood_split_is_the_course_split():
    fit, score = ood_split(1000)
    assert len(fit) == 800 and len(score) == 200 and len(np.intersect1d(fit, score)) == 0
    mask = np.random.RandomState(42).permutation(1000) >= int(1000 * 0.2)
    np.testing.assert_array_equal(fit, np.where(mask)[0])
    np.testing.assert_array_equal(score, np.where(~mask)[0])


def test_course_dataset_items_match_to_tensor(tmp_path):
    images, labels = good_arrays()
    ds = ImageDatasetNPZ(write(tmp_path / "d.npz", images=images, labels=labels))
    x, y = ds[2]
    assert len(ds) == 6 and y == 312
    torch.testing.assert_close(x, ToTensor()(images[2]))
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 64, 64) and yb.tolist() == [7, 7, 312, 312]


def test_model_input_matches_to_tensor():
    images, _ = good_arrays()
    batch = data.as_model_input(torch.from_numpy(images))
    torch.testing.assert_close(batch, torch.stack([ToTensor()(im) for im in images]))


def test_loading_holds_one_copy(tmp_path):
    n = 3000  # 36 MB of pixels
    images = np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    path = write(tmp_path / "big.npz", images=images, labels=np.arange(n))
    del images
    tracemalloc.start()
    split = load_npz(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = split.images.nbytes + split.labels.nbytes
    assert peak < 1.2 * size, f"peak {peak / 2**20:.1f} MiB for {size / 2**20:.1f} MiB of data"


def test_to_device_shares_memory_on_cpu():
    images, _ = good_arrays()
    on_device = data.to_device(images, "cpu")
    assert on_device.dtype == torch.uint8 and on_device.data_ptr() == images.ctypes.data


def test_spread_rows_covers_a_class_sorted_set():
    """The one row sampler (periodic probes, fine-tuning, max_train_images): spread over the whole set."""
    labels = np.repeat(np.arange(100), 500)            # sorted by class, as course-format files often are
    rows = data.spread_rows(len(labels), 20_000)
    assert len(rows) == 20_000 and len(np.unique(rows)) == 20_000
    assert len(np.unique(labels[rows])) == 100          # the first 20,000 rows would hold 40 classes
    assert np.array_equal(data.spread_rows(300, 0), np.arange(300))
    assert np.array_equal(data.spread_rows(300, 500), np.arange(300))
