"""utils/features.py and models.FeatureDesign: what get_features computes, its training statistics, old files."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models
from models import FeatureDesign, ImageEncoder, design_features
from utils import checkpoint, features, probes, submission
from utils.checkpoint import CheckpointError, export_encoder, load_weights_strict
from utils.data import load_splits

ROOT = Path(__file__).resolve().parents[1]
CENTRED = FeatureDesign(parts=("stage4", "stage3"), centre=True, whiten=None, mirror=True, scale=50.0)
WHITENED = FeatureDesign(parts=("stage4",), centre=True, whiten=0.5, mirror=False, scale=20.0)


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def as_input(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255


def test_design_features_rows_have_the_scale_and_parts_weigh_the_same():
    a, b = torch.randn(6, 4) * 100, torch.randn(6, 3) * 0.01      # very different activation scales
    h = design_features([a, b], FeatureDesign(parts=("a", "b"), scale=7.0), out_dim=10)
    assert h.shape == (6, 10) and torch.all(h[:, 7:] == 0)             # zero-padded to out_dim
    torch.testing.assert_close(h.norm(dim=1), torch.full((6,), 7.0))
    torch.testing.assert_close(h[:, :4].norm(dim=1), h[:, 4:7].norm(dim=1))
    with pytest.raises(ValueError, match="more than 5"):
        design_features([a, b], FeatureDesign(parts=("a", "b"), scale=1.0), out_dim=5)


def test_part_weights_and_signed_power_shape_the_features():
    a, b = torch.randn(6, 4), torch.randn(6, 3)
    weighted = design_features([a, b], FeatureDesign(parts=("a", "b"), scale=5.0, part_weights=(1.0, 0.5)), out_dim=8)
    torch.testing.assert_close(weighted.norm(dim=1), torch.full((6,), 5.0))       # the row norm is still the scale
    torch.testing.assert_close(weighted[:, 4:7].norm(dim=1), weighted[:, :4].norm(dim=1) / 2)
    rooted = design_features([a], FeatureDesign(parts=("a",), scale=1.0, power=0.5), out_dim=4)
    torch.testing.assert_close(rooted, F.normalize(a.sign() * a.abs().sqrt(), dim=1))
    with pytest.raises(ValueError, match="one weight per part"):
        FeatureDesign(parts=("a", "b"), part_weights=(1.0,))


def test_statistics_of_a_powered_design_are_fitted_on_the_powered_parts():
    parts = [torch.rand(50, 4) * 9]
    stats = features.feature_statistics(parts, FeatureDesign(parts=("a",), centre=True, power=0.5))
    torch.testing.assert_close(stats["means"][0], parts[0].sqrt().mean(dim=0))


def test_statistics_are_the_training_mean_of_the_mirror_averaged_parts():
    torch.manual_seed(0)
    model = ImageEncoder("tiny", feature_design=CENTRED).eval()
    train = images(40)
    features.fit_feature_statistics(model, train)
    with torch.no_grad():
        x = as_input(train)
        parts, mirrored = model.feature_parts(x), model.feature_parts(x.flip(-1))
    for name in CENTRED.parts:
        expected = ((parts[name] + mirrored[name]) / 2).double().mean(dim=0).float()
        torch.testing.assert_close(getattr(model, f"feature_mean_{name}"), expected, rtol=1e-5, atol=1e-6)
    assert float(model.feature_statistics_fitted) == 1.0


def test_mirror_design_gives_the_same_features_to_an_image_and_its_mirror():
    model = features.fit_feature_statistics(ImageEncoder("tiny", feature_design=CENTRED).eval(), images(20))
    x = as_input(images(5, seed=1))
    with torch.no_grad():
        torch.testing.assert_close(model.get_features(x), model.get_features(x.flip(-1)), rtol=1e-4, atol=1e-4)
        f = model.get_features(x)
    torch.testing.assert_close(f.norm(dim=1), torch.full((5,), 50.0))


def test_shrunk_whitening_maps_each_variance_to_its_shrunk_ratio():
    """Along each eigenvector of the training covariance C (eigenvalue l), the whitened variance is
    l / ((1 - s) l + s t), t = mean(diag C): at most 1 / (1 - s), and near 1 for the directions that dominate."""
    model = features.fit_feature_statistics(ImageEncoder("tiny", feature_design=WHITENED).eval(), images(300))
    (part,) = features.training_parts(model, images(300))
    white = (part - model.feature_mean_stage4) @ model.feature_whitener_stage4
    raw = torch.linalg.eigvalsh(torch.cov(part.T.double()))
    t = torch.cov(part.T.double()).diagonal().mean()
    expected = raw / (0.5 * raw + 0.5 * t)
    torch.testing.assert_close(torch.linalg.eigvalsh(torch.cov(white.T.double())), expected.sort().values,
                               rtol=1e-3, atol=1e-4)
    assert expected.max() <= 2.0
    with pytest.raises(ValueError, match="shrinkage"):
        features.shrunk_whitener(part, 0.0)


def test_an_unfitted_design_uses_the_identity_statistics():
    """The template's contract: ImageEncoder().get_features works before any fitting or loading; with the identity
    statistics (mean 0, whitener I) it is the design without centring and whitening."""
    model = ImageEncoder("tiny", feature_design=WHITENED).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model.get_features(x)
        plain = design_features(model.design_parts(x), WHITENED)
    assert float(model.feature_statistics_fitted) == 0.0 and out.shape == (2, 1000)
    assert torch.allclose(out, plain, atol=1e-6)


def test_unknown_or_too_wide_parts_are_refused():
    with pytest.raises(ValueError, match="parts must be some of"):
        ImageEncoder("tiny", feature_design=FeatureDesign(parts=("stage9",)))
    with pytest.raises(ValueError, match="more than 1000"):
        ImageEncoder("tiny", feature_design=FeatureDesign(parts=("feature_layer", "stage4")))


def test_statistics_travel_in_the_weights_file_and_load_strictly(tmp_path):
    model = features.fit_feature_statistics(ImageEncoder("tiny", feature_design=CENTRED).eval(), images(30))
    path = export_encoder(model, tmp_path / "w.safetensors")
    loaded = load_weights_strict(ImageEncoder("tiny", feature_design=CENTRED), path).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_features(x), model.get_features(x))


def test_a_file_without_statistics_names_the_command_that_adds_them(tiny_data_dir, tmp_path):
    old = ImageEncoder("tiny", feature_design=FeatureDesign()).eval()     # a design with no statistics
    path = export_encoder(old, tmp_path / "old.safetensors", metadata={"arch": "tiny"})
    with pytest.raises(CheckpointError, match=r"no feature statistics.*python -m utils\.features --weights"):
        load_weights_strict(ImageEncoder("tiny", feature_design=CENTRED), path)

    # the command adds them from the training images, the network weights unchanged
    model = checkpoint.load_network_weights(ImageEncoder("tiny", feature_design=CENTRED), path)
    features.fit_feature_statistics(model, load_splits(tiny_data_dir)["train"].images)
    fixed = export_encoder(model, tmp_path / "fixed.safetensors")
    reloaded = load_weights_strict(ImageEncoder("tiny", feature_design=CENTRED), fixed)
    for key, value in old.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_add_statistics_command_completes_an_old_file(tiny_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "FEATURE_DESIGN", CENTRED)      # as if the shipped design needed statistics
    old = ImageEncoder("tiny", feature_design=FeatureDesign())
    path = export_encoder(old, tmp_path / "old.safetensors", metadata={"arch": "tiny"})
    assert features.main(["--weights", str(path), "--data-dir", str(tiny_data_dir)]) == 0
    load_weights_strict(ImageEncoder("tiny"), path)     # strict: every buffer is there now
    # only train.npz is needed; a folder without it is named, with no traceback and the file unchanged
    before, _ = path.read_bytes(), capsys.readouterr()
    assert features.main(["--weights", str(path), "--data-dir", str(tmp_path / "nowhere")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "nowhere" in error and path.read_bytes() == before


def test_periodic_probes_and_eval_py_compute_identical_features(tiny_data_dir, tmp_path, monkeypatch):
    """The engine's periodic evaluation and the pre-submission check go through the same get_features, with the
    same statistics (the probes fit them on all training rows here; export does the same)."""
    from utils.config import TrainConfig
    from utils.steps import build_networks
    from utils.submission import check
    from utils.train import engine_functions, prepare_data, start_run

    torch.manual_seed(0)
    splits, cpu = load_splits(tiny_data_dir), torch.device("cpu")
    cfg = TrainConfig(arch="tiny", local_views=0, batch_size=64, eval_max_train=0, eval_linear_iters=20,
                      out_dir=str(tmp_path), progress=False)
    data = prepare_data(splits, cpu)
    model, _, optimizer = build_networks(cfg, cpu)
    seen = []
    real = probes.evaluate_protocol
    monkeypatch.setattr(probes, "evaluate_protocol", lambda *sets, **kw: seen.append(sets) or real(*sets, **kw))
    with start_run(cfg, data, model, optimizer) as run:
        engine_functions(cfg, data, run)[1](run.exported)           # the evaluation_step of the engine

    exported = ImageEncoder("tiny")
    exported.load_state_dict(model.state_dict())
    report = submission.Report(folder="memory", echo=False)
    check.run_protocol(report, exported.eval(), splits, fast=True, batch_size=64, progress=False)
    assert report.ok, [c.line() for c in report.failures]
    (train_a, val_a, ood_a), (train_b, val_b, ood_b) = seen
    for a, b in ((train_a, train_b), (val_a, val_b), (ood_a, ood_b)):
        torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-4)


def test_feature_study_runs_in_a_tiny_configuration(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "features.py"), "--tiny", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "features-tiny.json").read_text())
    assert len(record["commit"]) == 40 and record["device"] and record["sizes"]["stats"] > 0
    assert len(record["stage_a"]) == 8 and record["stage_b"] and record["winner"]["parts"]
    for row in record["stage_a"]:
        assert 0 <= row["score"] <= 100
        assert set(row["ood"]["lbfgs_iter"]) == {"ood_linear"} and isinstance(row["ood"]["converged"]["ood_linear"], bool)
        assert row["fewshot100"]["ood_knn"] is not None
    final = record["finalists"]
    assert [f["design"] for f in final] == [record["baseline"], record["winner"]]
    assert all(f["id"]["id_linear"] is not None and "id_linear" in f["id"]["lbfgs_iter"] for f in final)
    assert record["export_check_max_abs_diff"] < 1e-3     # the scored design is what get_features computes
    # Stage C: the whole grid screened on k-NN alone, the best by the screen measured fully, then at another scale.
    screen = record["stage_c_screen"]
    assert len(screen) == 8 and all("linear" not in r["ood_mean"] and "score" not in r for r in screen)
    best_screened = max(screen, key=lambda r: r["screen_score"])
    assert [r["design"] for r in record["stage_c"]] == [best_screened["design"],
                                                         {**best_screened["design"],
                                                          "scale": best_screened["design"]["scale"] * 2}]
    assert record["shipped_design"]["design"] == models.FEATURE_DESIGN.as_dict() and record["shipped_design"]["score"]
    every = record["stage_a"] + record["stage_b"] + record["stage_c"]
    assert math.isclose(final[1]["score"], max(r["score"] for r in every), abs_tol=0.1 + 1e-9)


def test_the_square_root_has_finite_gradients_at_zero():
    x = torch.tensor([0.0, 0.5, -2.0], requires_grad=True)
    models.signed_power(x, 0.5).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1] > 0
    assert models.signed_power(torch.tensor([0.0, 4.0]), 0.5).tolist() == [0.0, 2.0]
