"""The Vision Transformers of models.py: shapes, 32-px views, the feature design's parts, weight decay, training
through the engine with each objective, strict safetensors round trips, and a submission eval.py accepts.

Training uses a registered test size ("vit_test": embed 32, depth 4, 2 heads), added to models.ARCHITECTURES
for these tests only, so that the engine (which builds ImageEncoder(cfg.arch)) trains it in seconds."""
import json
import math

import pytest
import torch
from safetensors.torch import load_model

import models
from models import FeatureDesign, ImageEncoder, ViTBackbone, vit_spec
from utils import optim
from utils.checkpoint import export_encoder
from utils.data import load_splits
from utils.features import fit_feature_statistics
from utils.submission import assemble_submission, check_submission
from utils.train import TrainConfig, train

TEST_SPEC = vit_spec(embed_dim=32, depth=4, heads=2, proj_hidden=128)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small tensors: see tests/conftest.py


@pytest.fixture
def vit_test_arch(monkeypatch):
    monkeypatch.setitem(models.ARCHITECTURES, "vit_test", TEST_SPEC)
    return "vit_test"


def features_of(model: ImageEncoder, x: torch.Tensor, train_images) -> torch.Tensor:
    """get_features under the current models.FEATURE_DESIGN, its training statistics fitted first if it needs
    any (the lead's design may centre or whiten)."""
    fit_feature_statistics(model, train_images)
    with torch.no_grad():
        return model.eval().get_features(x)


def test_vit_sizes_tokens_and_pooling():
    torch.manual_seed(0)
    model = ImageEncoder("vit_tiny")
    backbone = model.backbone
    assert isinstance(backbone, ViTBackbone) and backbone.out_dim == 192 and len(backbone.blocks) == 12
    assert backbone.blocks[0].attn.heads == 3 and backbone.stage_ends == (3, 6, 9, 12)
    assert model.part_widths == {"stage1": 192, "stage2": 192, "stage3": 192, "stage4": 192, "feature_layer": 1000}
    small = ImageEncoder("vit_small").backbone
    assert small.out_dim == 384 and small.blocks[0].attn.heads == 6 and len(small.blocks) == 12
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert backbone.tokens(model.normalize_input(x)).shape == (2, 64, 192)     # 8 x 8 patches of 8 px
        stages = backbone.pooled_stages(model.normalize_input(x))
        torch.testing.assert_close(stages[-1], backbone(model.normalize_input(x)))  # the last part is the output
        h, z = model(x)
    assert [s.shape for s in stages] == [(2, 192)] * 4
    assert h.shape == (2, 1000) and z.shape == (2, 128)
    # the four parts are four different depths of the network, not one tensor repeated
    assert all(not torch.allclose(a, b) for a, b in zip(stages, stages[1:]))


def test_get_features_under_the_current_design_and_every_part(tiny_data_dir):
    torch.manual_seed(0)
    train_images = load_splits(tiny_data_dir)["train"].images[:16]
    x = torch.rand(3, 3, 64, 64)
    f = features_of(ImageEncoder("vit_tiny"), x, train_images)             # models.FEATURE_DESIGN, as shipped
    assert f.shape == (3, 1000) and f.dtype == torch.float32 and torch.isfinite(f).all()
    # a design reading all four stages (4 x 192 = 768 dimensions) with centring: part_widths fit the ViT
    every_stage = FeatureDesign(parts=("stage1", "stage2", "stage3", "stage4"), centre=True)
    f = features_of(ImageEncoder("vit_tiny", feature_design=every_stage), x, train_images)
    assert f.shape == (3, 1000) and torch.all(f[:, 768:] == 0)
    torch.testing.assert_close(f.norm(dim=1), torch.full((3,), every_stage.scale))


def test_32px_views_use_interpolated_position_embeddings():
    torch.manual_seed(0)
    model = ImageEncoder("vit_tiny", embed_dim=32, depth=4, heads=2)
    backbone = model.backbone
    with torch.no_grad():
        h, z = model(torch.rand(4, 3, 32, 32))
        assert h.shape == (4, 1000) and z.shape == (4, 128) and torch.isfinite(h).all()
        assert backbone.tokens(torch.rand(4, 3, 32, 32)).shape == (4, 16, 32)        # 4 x 4 patches
        # A position code that grows from left to right keeps doing so on the 4 x 4 grid, and a constant one
        # stays that constant: the interpolation resizes the code, it does not scramble it.
        column = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 32, 8, 8)
        backbone.pos_embed.copy_(column)
        backbone.patch_embed.weight.zero_()
        backbone.patch_embed.bias.zero_()
        small = backbone.tokens(torch.zeros(1, 3, 32, 32)).view(4, 4, 32)             # (rows, columns, D)
        assert torch.all(small[:, 1:, 0] > small[:, :-1, 0]) and torch.allclose(small[0], small[3])
        full = backbone.tokens(torch.zeros(1, 3, 64, 64)).view(8, 8, 32)
        torch.testing.assert_close(full[:, :, 0], column[0, 0])                        # 64 px: the code as learned
        backbone.pos_embed.fill_(0.25)
        torch.testing.assert_close(backbone.tokens(torch.zeros(1, 3, 32, 32)), torch.full((1, 16, 32), 0.25))
    with pytest.raises(ValueError, match="multiples of the patch size 8"):
        model(torch.rand(1, 3, 36, 36))
    with pytest.raises(ValueError, match="depth must be >= 4"):
        ImageEncoder("vit_tiny", depth=2)


def test_position_embeddings_get_no_weight_decay():
    model = ImageEncoder("vit_tiny", embed_dim=32, depth=4, heads=2)
    student = torch.nn.ModuleDict({"encoder": model})        # as the engine wraps it
    decay, no_decay = optim.param_groups(student, 0.1)
    in_group = lambda p, group: any(p is q for q in group["params"])   # noqa: E731
    assert in_group(model.backbone.pos_embed, no_decay) and not in_group(model.backbone.pos_embed, decay)
    assert in_group(model.backbone.blocks[0].attn.qkv.weight, decay)
    assert in_group(model.backbone.patch_embed.weight, decay)
    assert in_group(model.backbone.blocks[0].norm1.weight, no_decay)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(student.parameters()))


@pytest.mark.parametrize("loss, settings", [
    ("vicreg", {}),
    ("ntxent", {"optimizer": "lars", "lr": 0.3}),
    ("lejepa", {}),
    ("dino", {"ema_momentum": 0.99, "dino_prototypes": 64}),
])
def test_each_objective_trains_a_vit_through_the_engine(vit_test_arch, tiny_data_dir, tmp_path, loss, settings):
    """Three epochs of 5 steps with 2 global and 2 local (32-px) views: the epoch loss goes down (measured on one
    2-core machine: vicreg 21.26 -> 20.34, ntxent/LARS 5.29 -> 5.07, lejepa 1.00 -> 0.67; DINO's loss is not
    monotone over so few steps, so for it the test asks only for finite losses and an export)."""
    cfg = TrainConfig(arch=vit_test_arch, loss=loss, local_views=2, epochs=3, batch_size=64, eval_every=0,
                      checkpoint_every=0, eval_linear_iters=30, log_every=1, data_dir=str(tiny_data_dir),
                      out_dir=str(tmp_path), progress=False, seed=0, **settings)
    result = train(cfg)
    epoch_losses = [r["loss"] for r in result.history["train"]]
    print(loss, epoch_losses)
    assert len(epoch_losses) == 3 and all(math.isfinite(v) for v in epoch_losses), epoch_losses
    if loss != "dino":
        assert epoch_losses[-1] < epoch_losses[0], epoch_losses
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["config"]["arch"] == vit_test_arch
    # the exported file loads strictly into a fresh model of the same arch and gives the same features
    fresh = ImageEncoder(vit_test_arch)
    missing, unexpected = load_model(fresh, str(result.weights_path), strict=True)
    assert not missing and not unexpected
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval().get_features(x), result.model.eval().get_features(x))


def test_vit_tiny_round_trip_and_a_submission_eval_accepts(tiny_data_dir, tmp_path):
    """What the grader does with a vit_tiny submission: assemble_submission sets ARCH = "vit_tiny" in the copied
    models.py, and eval.py's checks (quick mode: everything but the probes) pass on it."""
    torch.manual_seed(0)
    model = ImageEncoder("vit_tiny")
    fit_feature_statistics(model, load_splits(tiny_data_dir)["train"].images[:16])
    sources = tmp_path / "sources"
    sources.mkdir()
    weights = export_encoder(model, sources / "final_model.safetensors", metadata={"arch": "vit_tiny"})
    fresh = ImageEncoder("vit_tiny")
    missing, unexpected = load_model(fresh, str(weights), strict=True)
    assert not missing and not unexpected
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval().get_features(x), model.eval().get_features(x), rtol=0, atol=0)

    from test_eval import notebook_text            # an executed notebook with an identity
    (sources / "CS461_Assignment1.ipynb").write_text(notebook_text())
    (sources / "report.md").write_text("# Report\n\nA ViT trained without labels. " * 5)
    folder = assemble_submission(tmp_path / "submission", weights=weights,
                                 notebook=sources / "CS461_Assignment1.ipynb", report=sources / "report.md",
                                 models=models.__file__)
    assert 'ARCH = "vit_tiny"' in (folder / "models.py").read_text()
    report = check_submission(folder, data_dir=tiny_data_dir, quick=True, progress=False, echo=False)
    assert report.ok, [(c.name, c.message) for c in report.failures]
