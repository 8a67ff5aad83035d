"""models.py: the course's fixed interface, self-containment, and strict safetensors round trips."""
import ast
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_model, save_file

import models
from models import ImageEncoder
from utils.checkpoint import CheckpointError, export_encoder, load_weights_strict

ROOT = Path(__file__).resolve().parents[1]


def test_fixed_class_variables():
    assert (ImageEncoder.input_dim, ImageEncoder.input_channels) == (64, 3)
    assert (ImageEncoder.feature_dim, ImageEncoder.proj_dim) == (1000, 128)


def test_no_argument_constructor_builds_the_submitted_architecture():
    model = ImageEncoder()
    assert model.arch == models.ARCH == "resnet18_s2"
    assert sum(p.numel() for p in model.parameters()) > 10_000_000


def test_models_py_imports_only_torch_and_stdlib():
    tree = ast.parse((ROOT / "models.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"torch", "torchvision", "math"}, roots


def test_models_py_has_no_construct_that_needs_its_own_module_registered():
    """The grader's exec_module never puts models.py in sys.modules: no postponed annotations (a dataclass under
    them looks its module up there), no dataclass at all. The grader's whole sequence is tests/test_grader.py."""
    text = (ROOT / "models.py").read_text()
    tree = ast.parse(text)
    futures = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    decorators = [ast.unparse(d) for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for d in n.decorator_list]
    assert futures == [] and not any("dataclass" in d for d in decorators), (futures, decorators)


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_an_untrained_encoder_returns_finite_features(arch):
    """The template's contract: ImageEncoder(arch).get_features on a model never loaded or fitted is finite
    (B, 1000) (the course's notebook calls it before training; a check of training from scratch may too)."""
    torch.manual_seed(0)
    model = ImageEncoder(arch).eval()
    with torch.no_grad():
        f = model.get_features(torch.rand(2, 3, 64, 64))
    assert f.shape == (2, 1000) and torch.isfinite(f).all()


@pytest.mark.parametrize("arch", ["tiny", "small"])
def test_get_features_shape_scale_and_forward(arch, fit_statistics):
    model = fit_statistics(ImageEncoder(arch)).eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        f = model.get_features(x)
        h, z = model(x)
        small_h, _ = model(torch.rand(4, 3, 32, 32))       # multi-crop views
    assert f.shape == (4, 1000) and f.dtype == torch.float32 and torch.isfinite(f).all()
    torch.testing.assert_close(f.norm(dim=1), torch.full((4,), models.FEATURE_DESIGN.scale))   # the design's scale
    assert h.shape == (4, 1000) and z.shape == (4, 128) and small_h.shape == (4, 1000)


def test_the_reference_design_is_the_normalised_feature_layer():
    """FeatureDesign() (the feature layer, L2-normalised, times sqrt(1000)) is the design the study compares
    every other one with: the pooled last stage through the feature layer."""
    model = ImageEncoder("tiny", feature_design=models.FeatureDesign()).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.embed(x), dim=1) * math.sqrt(1000)
        torch.testing.assert_close(model.get_features(x), expected)
        parts = model.feature_parts(x)
        torch.testing.assert_close(parts["stage4"], model.backbone(model.normalize_input(x)))
    with pytest.raises(ValueError, match="unknown arch"):
        ImageEncoder("resnet50")


def test_safetensors_round_trip_is_strict_and_exact(tmp_path, fit_statistics):
    torch.manual_seed(0)
    model = fit_statistics(ImageEncoder()).eval()
    model.to(memory_format=torch.channels_last)   # as trained on CUDA: non-contiguous conv weights
    path = export_encoder(model, tmp_path / "final_model.safetensors", metadata={"arch": "resnet18"})
    fresh = ImageEncoder().eval()
    missing, unexpected = load_model(fresh, path, strict=True)   # exactly what the grader does
    assert not missing and not unexpected
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.get_features(x), model.get_features(x))


def test_strict_load_reports_key_and_shape_problems(tmp_path):
    weights = {k: v.clone() for k, v in ImageEncoder("tiny").state_dict().items()}
    weights["extra.weight"] = torch.zeros(1)
    del weights["feature_layer.bias"]
    weights["feature_layer.weight"] = torch.zeros(10, 128)
    path = tmp_path / "w.safetensors"
    save_file(weights, path)
    with pytest.raises(CheckpointError) as info:
        load_weights_strict(ImageEncoder("tiny"), path)
    message = str(info.value)
    assert "missing keys: feature_layer.bias" in message and "unexpected keys: extra.weight" in message
    assert "feature_layer.weight: file (10, 128) vs model (1000, 128)" in message


def test_truncated_weights_file(tmp_path):
    path = export_encoder(ImageEncoder("tiny"), tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_weights_strict(ImageEncoder("tiny"), path)


def test_export_refuses_compiled_wrapper(tmp_path):
    wrapper = torch.nn.Module()
    wrapper._orig_mod = ImageEncoder("tiny")
    with pytest.raises(CheckpointError, match="_orig_mod"):
        export_encoder(wrapper, tmp_path / "w.safetensors")


def test_shipped_weights_load_strictly_into_the_no_argument_model():
    """What the grader does with the committed final_model.safetensors."""
    from utils.submission import weights_metadata
    path = ROOT / "final_model.safetensors"
    assert weights_metadata(path)["arch"] == models.ARCH   # trained as the architecture ImageEncoder() builds
    model = ImageEncoder()
    load_model(model, str(path), strict=True)
    features = model.eval().get_features(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, 1000) and torch.isfinite(features).all()
