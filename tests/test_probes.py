"""Probes: the course's functions behave like the course's; the fast torch probes agree with scikit-learn;
the grader's protocol (ID train -> val, OOD 80/20 split) in percent; encoding equals the grader's ToTensor path.

Everything runs on small synthetic features on the CPU (a few seconds per test).
"""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import ToTensor

from utils import probes
from utils.data import Split, ood_split


def gaussian_clusters(n, dim, n_classes, *, seed, spread, label_pool=1000):
    """n points around n_classes random centres, labelled with sparse ids drawn from 0..label_pool-1.

    Returns (features (n, dim) float32, labels (n,) int64, the sorted label ids used). `spread` sets the
    distance between centres relative to the unit noise: larger is easier.
    """
    rng = np.random.RandomState(seed)
    label_ids = np.sort(rng.choice(label_pool, n_classes, replace=False))
    centres = rng.randn(n_classes, dim) * spread / np.sqrt(dim) * 2
    which = rng.randint(0, n_classes, n)
    features = centres[which] + rng.randn(n, dim) / np.sqrt(dim) * 2
    return features.astype(np.float32), label_ids[which].astype(np.int64), label_ids


def split(features, labels, n_fit):
    return features[:n_fit], labels[:n_fit], features[n_fit:], labels[n_fit:]


class TinyEncoder(nn.Module):
    """A small conv net with batch norm (so train and eval mode give different features) and dropout."""

    def __init__(self, feature_dim=24):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, feature_dim),
        )

    def get_features(self, x):
        return self.body(x)


class ToTensorDataset(Dataset):
    """The course's ImageDatasetNPZ in miniature: (ToTensor()(image), label)."""

    def __init__(self, images, labels):
        self.images, self.labels, self.transform = images, labels, ToTensor()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


@pytest.fixture(scope="module")
def tiny_images():
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(40, 64, 64, 3), dtype=np.uint8)
    labels = rng.choice([3, 17, 998], size=40).astype(np.int64)
    return images, labels


@pytest.fixture(scope="module")
def trained_bn_model(tiny_images):
    """TinyEncoder whose batch-norm running statistics are not the defaults (so eval != train features)."""
    torch.manual_seed(0)
    model = TinyEncoder()
    x = torch.from_numpy(tiny_images[0]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        for _ in range(3):
            model.get_features(x)  # train mode: updates running mean/var
    return model


# ----------------------------------------------------------------------------------------------------------
# The course's functions
# ----------------------------------------------------------------------------------------------------------

def test_course_probes_return_fractions_equal_to_sklearn():
    x, y, _ = gaussian_clusters(900, 32, 6, seed=1, spread=0.4)
    xtr, ytr, xte, yte = split(torch.from_numpy(x), torch.from_numpy(y), 700)  # tensors, as in the course

    knn = probes.run_knn_probe(xtr, ytr, xte, yte)
    expected_knn = accuracy_score(yte, KNeighborsClassifier(n_neighbors=5).fit(xtr, ytr).predict(xte))
    linear = probes.run_linear_probe(xtr, ytr, xte, yte)
    expected_linear = accuracy_score(yte, LogisticRegression(max_iter=1000).fit(xtr, ytr).predict(xte))

    assert isinstance(knn, float) and isinstance(linear, float)
    assert 0.0 <= knn <= 1.0 and 0.0 <= linear <= 1.0
    assert knn == expected_knn
    assert linear == expected_linear
    assert 0.3 < knn < 1.0 and 0.3 < linear < 1.0  # a meaningful, not degenerate, check


def test_extract_features_and_labels_shapes_normalize_and_mode(trained_bn_model, tiny_images):
    images, labels = tiny_images
    loader = DataLoader(ToTensorDataset(images, labels), batch_size=16)
    model = trained_bn_model.train()

    features, got_labels = probes.extract_features_and_labels(model, loader)
    assert model.training, "the course's function must not switch the model to eval mode"
    assert isinstance(features, torch.Tensor) and features.device.type == "cpu"
    assert features.shape == (40, 24) and features.dtype == torch.float32
    assert isinstance(got_labels, torch.Tensor) and got_labels.tolist() == labels.tolist()

    model.eval()
    unit, _ = probes.extract_features_and_labels(model, loader, normalize=True)
    assert not model.training
    assert torch.allclose(unit.norm(dim=1), torch.ones(40), atol=1e-5)
    model.train()


# ----------------------------------------------------------------------------------------------------------
# Encoding exactly as the grader
# ----------------------------------------------------------------------------------------------------------

def test_encode_images_equals_totensor_dataloader_path(trained_bn_model, tiny_images):
    images, labels = tiny_images
    model = trained_bn_model.train()
    model.body[2].eval()  # a submodule in its own mode: must be restored as it was, not flattened

    encoded = probes.encode_images(model, images, batch_size=7)
    assert model.training and not model.body[2].training, "modes must be restored module by module"

    model.eval()
    loader = DataLoader(ToTensorDataset(images, labels), batch_size=16)
    reference, _ = probes.extract_features_and_labels(model, loader)
    model.train()

    assert encoded.shape == (40, 24) and encoded.dtype == torch.float32 and encoded.device.type == "cpu"
    assert torch.allclose(encoded, reference, atol=1e-5), float((encoded - reference).abs().max())
    # same result from a uint8 tensor input, and it really used eval mode (train mode differs)
    assert torch.allclose(probes.encode_images(model, torch.from_numpy(images)), reference, atol=1e-5)
    train_mode, _ = probes.extract_features_and_labels(model, loader)
    assert not torch.allclose(train_mode, reference, atol=1e-3)


def test_encode_images_rejects_float_or_chw_images(trained_bn_model):
    with pytest.raises(ValueError, match="uint8.*found dtype float32"):
        probes.encode_images(trained_bn_model, np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*\(2, 3, 64, 64\)"):
        probes.encode_images(trained_bn_model, np.zeros((2, 3, 64, 64), np.uint8))


# ----------------------------------------------------------------------------------------------------------
# Fast k-NN
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, compute_dtype", [(np.float32, None), (np.float64, None),
                                                  (np.float32, torch.float32)])  # float32: what a GPU runs
def test_knn_predict_equals_sklearn_on_sparse_labels(dtype, compute_dtype):
    x, y, label_ids = gaussian_clusters(2500, 64, 12, seed=2, spread=0.35)
    xtr, ytr, xte, yte = split(x.astype(dtype), y, 2000)
    # continuous random data: exact distance ties have probability zero, so the neighbour sets are defined
    expected = KNeighborsClassifier(n_neighbors=5).fit(xtr, ytr).predict(xte)
    expected_idx = KNeighborsClassifier(n_neighbors=5).fit(xtr, ytr).kneighbors(xte, return_distance=False)

    pred, idx = probes.knn_predict(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                                   dtype=compute_dtype)
    assert pred.shape == (500,) and idx.shape == (500, 5)
    assert set(pred.tolist()) <= set(label_ids.tolist())  # labels come back as given, never 0..C-1
    assert np.array_equal(pred.numpy(), expected)
    assert np.array_equal(idx.numpy(), expected_idx)
    assert 0.4 < (expected == yte).mean() < 0.95  # a test that could fail: not everything is trivial


def test_knn_predict_tie_breaking_smallest_label_wins():
    # One query at the origin. Its 5 nearest training points, at distinct distances 1..5, vote
    # 2 x label 998, 2 x label 17, 1 x label 3: a 2-2 tie between 17 and 998, so scikit-learn picks 17.
    # Further points (distance >= 10) are outside the neighbourhood.
    axis = np.eye(4)[0]
    near = np.stack([axis * d for d in (1.0, 2.0, 3.0, 4.0, 5.0)])
    near_labels = np.array([998, 998, 17, 17, 3])  # the nearer pair has the larger label: distance must not matter
    far = np.stack([np.eye(4)[1] * 10.0, np.eye(4)[2] * 11.0, np.eye(4)[3] * 12.0])
    far_labels = np.array([3, 3, 3])
    train = np.concatenate([near, far])
    labels = np.concatenate([near_labels, far_labels])
    queries = np.zeros((1, 4))

    sklearn_pred = KNeighborsClassifier(n_neighbors=5).fit(train, labels).predict(queries)
    pred, idx = probes.knn_predict(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(queries))
    assert sklearn_pred.tolist() == [17]
    assert pred.tolist() == [17]
    assert idx.tolist() == [[0, 1, 2, 3, 4]]

    # k=4, one vote each for four labels (the nearest has the largest): the smallest label, 3, wins
    labels4 = np.array([998, 17, 42, 3, 5, 5, 5, 5])
    pred4, _ = probes.knn_predict(torch.from_numpy(train), torch.from_numpy(labels4), torch.from_numpy(queries), k=4)
    expected4 = KNeighborsClassifier(n_neighbors=4).fit(train, labels4).predict(queries)
    assert pred4.tolist() == expected4.tolist() == [3]


def test_knn_accuracy_is_percent_and_fast_equals_exact():
    x, y, _ = gaussian_clusters(1500, 48, 10, seed=3, spread=0.4)
    xtr, ytr, xte, yte = split(x, y, 1200)
    fast = probes.knn_accuracy(xtr, ytr, xte, yte, fast=True)
    exact = probes.knn_accuracy(xtr, ytr, xte, yte, fast=False)
    assert fast == exact == pytest.approx(100 * probes.run_knn_probe(xtr, ytr, xte, yte))
    assert 1.0 < fast < 100.0


def test_probe_inputs_are_checked_with_clear_errors():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="length mismatch: 10 feature rows but 9 labels"):
        probes.knn_predict(x, np.arange(9), x)
    with pytest.raises(ValueError, match="2-D.*found shape \\(10,\\)"):
        probes.knn_predict(x[:, 0], np.arange(10), x)
    with pytest.raises(ValueError, match="4 dimensions but test features have 3"):
        probes.knn_accuracy(x, np.arange(10), x[:, :3], np.arange(10))
    with pytest.raises(ValueError, match="integer labels.*float"):
        probes.fit_linear_probe(x, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="at least 2 classes"):
        probes.fit_linear_probe(x, np.zeros(10, np.int64))


# ----------------------------------------------------------------------------------------------------------
# Fast linear probe
# ----------------------------------------------------------------------------------------------------------

def test_fit_linear_probe_matches_sklearn_logistic_regression():
    x, y, label_ids = gaussian_clusters(3000, 200, 25, seed=4, spread=0.2)
    xtr, ytr, xte, yte = split(x, y, 2400)
    clf = LogisticRegression(max_iter=1000).fit(xtr, ytr)
    probe = probes.fit_linear_probe(torch.from_numpy(xtr), torch.from_numpy(ytr))

    assert probe.classes.tolist() == label_ids.tolist()
    assert probe.W.shape == (25, 200) and probe.b.shape == (25,) and probe.converged
    sk_acc = 100 * (clf.predict(xte) == yte).mean()
    torch_acc = 100 * (probe.predict(xte).numpy() == yte).mean()
    assert abs(torch_acc - sk_acc) <= 1.0, (torch_acc, sk_acc)
    assert 20.0 < sk_acc < 95.0

    # Same objective: sklearn's coefficients evaluated with our formula, against our minimum.
    class_idx = np.searchsorted(label_ids, ytr)
    sk_objective = probes.logistic_objective(clf.coef_, clf.intercept_, xtr, class_idx)
    assert probe.objective <= sk_objective * (1 + 1e-6), (probe.objective, sk_objective)
    assert probe.objective == pytest.approx(sk_objective, rel=1e-2)  # same function, not another one
    # predict_proba agrees with sklearn's probabilities (columns in sorted-label order)
    assert np.abs(probe.predict_proba(xte).numpy() - clf.predict_proba(xte)).max() < 0.05


def test_fit_linear_probe_binary_uses_sklearn_parametrisation():
    # Two classes: sklearn fits ONE weight vector (its penalty differs from a 2-class softmax's), so a
    # multinomial fit would reach a different optimum. We must land on sklearn's.
    x, y, label_ids = gaussian_clusters(600, 20, 2, seed=5, spread=0.8)
    x = x.astype(np.float64)  # sklearn fits float32 input in float32: compare at float64 precision
    clf = LogisticRegression(max_iter=1000, tol=1e-8).fit(x, y)
    probe = probes.fit_linear_probe(x, y, tol=1e-8, dtype=torch.float64)  # float64: compare optima tightly
    assert probe.W.shape == (2, 20) and probe.W[0].abs().max() == 0
    assert np.allclose(probe.W[1].numpy(), clf.coef_[0], atol=1e-4)
    assert np.allclose(probe.predict_proba(x).numpy(), clf.predict_proba(x), atol=1e-5)


def test_linear_accuracy_is_percent_fast_close_to_exact():
    x, y, _ = gaussian_clusters(1200, 40, 8, seed=6, spread=0.4)
    xtr, ytr, xte, yte = split(x, y, 900)
    fast = probes.linear_accuracy(xtr, ytr, xte, yte, fast=True)
    exact = probes.linear_accuracy(xtr, ytr, xte, yte, fast=False)
    assert exact == pytest.approx(100 * probes.run_linear_probe(xtr, ytr, xte, yte))
    assert abs(fast - exact) <= 1.0
    assert 1.0 < exact < 100.0


def test_the_exact_probes_hand_scikit_learn_torch_tensors_as_the_course_does(monkeypatch):
    """The course's extract_features_and_labels gives scikit-learn float32 torch tensors, which its input check
    turns into float64 (float32 numpy would stay float32, and the logistic regression would end elsewhere): the
    kit's exact path must hand it the same, whatever it was given."""
    x, y, _ = gaussian_clusters(300, 20, 4, seed=8, spread=0.4)
    xtr, ytr, xte, yte = split(x, y, 200)
    seen = []
    for estimator in (LogisticRegression, KNeighborsClassifier):
        real = estimator.fit
        monkeypatch.setattr(estimator, "fit", lambda self, X, Y, real=real: seen.append((type(X), type(Y))) or
                            real(self, X, Y))
    exact = probes.linear_accuracy(xtr, ytr, xte, yte, fast=False)
    probes.knn_accuracy(xtr, ytr, xte, yte, fast=False)
    assert seen == [(torch.Tensor, torch.Tensor)] * 2
    course = LogisticRegression(max_iter=1000).fit(torch.from_numpy(xtr), torch.from_numpy(ytr))
    assert course.coef_.dtype == np.float64
    assert exact == pytest.approx(100 * accuracy_score(yte, course.predict(torch.from_numpy(xte))))


def test_the_exact_probes_patch_in_intels_extension_when_it_is_installed_as_the_course_does(monkeypatch):
    """The course's utils.py calls sklearnex.patch_sklearn() when it can import it (the hub has it): the exact
    probes do the same, once, and say so; without it they say plain scikit-learn."""
    import sys
    import types

    import sklearn
    calls = []
    monkeypatch.setattr(probes, "_SKLEARNEX", None)
    monkeypatch.setitem(sys.modules, "sklearnex", types.SimpleNamespace(patch_sklearn=lambda: calls.append(1)))
    x, y, _ = gaussian_clusters(60, 8, 3, seed=9, spread=0.8)
    probes.knn_accuracy(*split(x, y, 40), fast=False)
    assert "with Intel's extension" in probes.sklearn_backend() and calls == [1]
    monkeypatch.setattr(probes, "_SKLEARNEX", None)
    monkeypatch.setitem(sys.modules, "sklearnex", None)            # not installed
    assert probes.sklearn_backend() == f"scikit-learn {sklearn.__version__}"


# ----------------------------------------------------------------------------------------------------------
# The grader's protocol
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def protocol_features():
    """ID: 20 classes, 1500 train + 400 val. OOD: 20 other classes, 1000 points (800 fit / 200 score)."""
    x, y, _ = gaussian_clusters(1900, 100, 20, seed=7, spread=0.35)
    ox, oy, _ = gaussian_clusters(1000, 100, 20, seed=8, spread=0.35)
    oy = oy + 1000  # other classes than the ID ones, as in the course
    as_t = torch.from_numpy
    return (as_t(x[:1500]), as_t(y[:1500])), (as_t(x[1500:]), as_t(y[1500:])), (as_t(ox), as_t(oy))


def test_evaluate_protocol_fast_agrees_with_exact_in_percent(protocol_features):
    train, val, ood = protocol_features
    fast = probes.evaluate_protocol(train, val, ood, fast=True, progress=False)
    exact = probes.evaluate_protocol(train, val, ood, fast=False, progress=False)

    for name in ("id_knn", "id_linear", "ood_knn", "ood_linear"):
        assert abs(getattr(fast, name) - getattr(exact, name)) <= 1.0, (name, fast, exact)
        assert 5.0 < getattr(exact, name) <= 100.0, "percent, not a fraction"
    assert fast.fast and not exact.fast
    assert set(fast.seconds) == {"id_knn", "id_linear", "ood_knn", "ood_linear"}

    # the OOD numbers are the course's probes on the course's 80/20 split, times 100
    fit, score = ood_split(1000)
    assert (exact.n_ood_fit, exact.n_ood_score) == (800, 200) == (len(fit), len(score))
    (of, oy) = ood
    expected = 100 * probes.run_knn_probe(of[fit], oy[fit], of[score], oy[score])
    assert exact.ood_knn == pytest.approx(expected)
    assert (exact.n_train, exact.n_val) == (1500, 400)


def test_protocol_result_prints_percentages_and_serialises():
    result = probes.ProtocolResult(id_knn=36.1234, id_linear=35.0, ood_knn=24.4, ood_linear=0.3, fast=True,
                                   n_train=100, n_val=10, n_ood_fit=8, n_ood_score=2, seconds={"id_knn": 0.5})
    text = str(result)
    for shown in ("36.12%", "35.00%", "24.40%", "0.30%"):
        assert shown in text
    assert result.as_dict()["id_knn"] == 36.1234 and result.as_dict()["seconds"] == {"id_knn": 0.5}


def test_evaluate_encoder_encodes_then_runs_the_protocol(trained_bn_model):
    rng = np.random.RandomState(9)
    make = lambda n, ids: (rng.randint(0, 256, (n, 64, 64, 3), dtype=np.uint8), rng.choice(ids, n))  # noqa: E731
    (tr_x, tr_y), (va_x, va_y), (oo_x, oo_y) = make(60, [3, 17]), make(20, [3, 17]), make(50, [5, 9, 11])
    model = trained_bn_model.train()
    split = lambda x, y: Split(x, y, None, Path("memory"))  # noqa: E731
    result, features = probes.evaluate_encoder(model, split(tr_x, tr_y), split(va_x, va_y), split(oo_x, oo_y))
    assert model.training
    assert (result.n_train, result.n_val, result.n_ood_fit, result.n_ood_score) == (60, 20, 40, 10)
    assert {"encode_train", "encode_val", "encode_ood", "ood_linear"} <= set(result.seconds)
    assert torch.equal(features["train"], probes.encode_images(model, tr_x))
    expected = probes.knn_accuracy(features["train"], tr_y, probes.encode_images(model, va_x), va_y)
    assert result.id_knn == expected
    # the ID probes on chosen training rows; features that are not finite are refused, naming the split
    subset, _ = probes.evaluate_encoder(model, split(tr_x, tr_y), split(va_x, va_y), split(oo_x, oo_y),
                                        fit_rows=np.arange(0, 60, 2))
    assert subset.n_train == 30
    broken = copy.deepcopy(model)
    broken.get_features = lambda x: torch.full((len(x), 1000), float("nan"))
    with pytest.raises(probes.EncodeError, match="NaN or infinite") as info:
        probes.evaluate_encoder(broken, split(tr_x, tr_y), split(va_x, va_y), split(oo_x, oo_y))
    assert info.value.split == "train"


def test_command_line_scores_a_weights_file_as_evaluate_encoder_does(tiny_data_dir, tmp_path, capsys,
                                                                       one_torch_thread, fit_statistics):
    """`python -m utils.probes --weights F --data-dir D`: strict loading, the file's arch from its metadata, the
    same four numbers as evaluate_encoder on the same model, written with their provenance; a file that does not
    fit the architecture is refused with an error naming it."""
    import json

    from models import ImageEncoder
    from utils.checkpoint import export_encoder
    from utils.data import load_splits

    torch.manual_seed(0)
    model = fit_statistics(ImageEncoder("tiny"), load_splits(tiny_data_dir)["train"].images).eval()
    path = export_encoder(model, tmp_path / "weights.safetensors", metadata={"arch": "tiny"})
    out = tmp_path / "result.json"
    common = ["--data-dir", str(tiny_data_dir), "--fast", "--device", "cpu", "--no-progress"]
    assert probes.main(["--weights", str(path), *common, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())

    s = load_splits(tiny_data_dir)
    direct, _ = probes.evaluate_encoder(model, s["train"], s["val"], s["ood"], fast=True, batch_size=64)
    for key in ("id_knn", "id_linear", "ood_knn", "ood_linear"):
        assert record[key] == pytest.approx(getattr(direct, key)), key
    assert record["arch"] == "tiny" and record["device"] and record["n_train"] == len(s["train"])
    assert f"{direct.id_knn:.2f}%" in printed

    assert probes.main(["--weights", str(path), "--arch", "resnet18_s2", *common]) == 1
    assert str(path) in capsys.readouterr().err
