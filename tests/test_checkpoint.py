"""utils/checkpoint.py: atomic writes, safe loading, pruning, clear errors for damaged files; the one safetensors
reader, the one encoder export and its metadata; networks loaded without another design's statistics."""
import json

import pytest
import torch

from models import FEATURE_DESIGN, FeatureDesign, ImageEncoder
from utils import checkpoint
from utils.checkpoint import CheckpointError, export_encoder

CENTRED = FeatureDesign(parts=("stage4", "stage3"), centre=True, whiten=None, mirror=True, scale=50.0)
WHITENED = FeatureDesign(parts=("stage4",), centre=True, whiten=0.5, mirror=False, scale=20.0)


def test_save_list_prune_and_load(tmp_path):
    for step in (10, 20, 30, 40):
        checkpoint.save_checkpoint({"step": step, "w": torch.full((3,), float(step))}, tmp_path, step, keep=2)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["ckpt_step00000030.pt", "ckpt_step00000040.pt"]
    state = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(tmp_path))
    assert state["step"] == 40 and state["w"].tolist() == [40.0] * 3
    assert not list(tmp_path.glob("*.tmp"))


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    checkpoint.atomic_write(path, lambda tmp: open(tmp, "wb").write(b"old"))

    def dies_half_way(tmp):
        open(tmp, "wb").write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(path, dies_half_way)
    assert path.read_bytes() == b"old" and not list(tmp_path.glob("*.tmp"))


def test_truncated_checkpoint_names_the_intact_previous_one(tmp_path):
    checkpoint.save_checkpoint({"step": 1, "w": torch.zeros(1000)}, tmp_path, 1)
    newest = checkpoint.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, tmp_path, 2)
    newest.write_bytes(newest.read_bytes()[:300])
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_checkpoint(newest)
    assert "corrupt or truncated" in str(info.value) and "ckpt_step00000001.pt is intact" in str(info.value)
    assert checkpoint.load_checkpoint(tmp_path / "ckpt_step00000001.pt")["step"] == 1


class Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = checkpoint.checkpoint_path(tmp_path, 5)
    torch.save({"format_version": checkpoint.FORMAT_VERSION, "payload": Sneaky()}, path)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load_checkpoint(path)


def test_foreign_file_is_refused(tmp_path):
    path = checkpoint.checkpoint_path(tmp_path, 5)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this kit"):
        checkpoint.load_checkpoint(path)


def test_export_always_writes_the_arch_and_the_statistics_metadata(tmp_path, fit_statistics):
    """export_encoder is every exporter's: the arch, the design the statistics were fitted for and on what, then
    the run's own metadata; read_weights gives the tensors and that metadata back."""
    model = fit_statistics(ImageEncoder("tiny"))
    path = export_encoder(model, tmp_path / "w.safetensors", fitted_on="64 random images", metadata={"step": "7"})
    tensors, metadata = checkpoint.read_weights(path)
    assert set(tensors) == set(model.state_dict())
    assert metadata["arch"] == "tiny" and metadata["step"] == "7"
    assert json.loads(metadata["feature_design"]) == FEATURE_DESIGN.as_dict()
    assert metadata["feature_statistics"] == "64 random images"
    unfitted = export_encoder(ImageEncoder("tiny"), tmp_path / "u.safetensors")
    assert checkpoint.weights_metadata(unfitted)["feature_statistics"].startswith("not fitted")
    assert checkpoint.weights_arch(unfitted) == "tiny" and checkpoint.weights_arch(unfitted, "small") == "small"


def test_the_reader_names_a_missing_or_truncated_weights_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.read_weights(tmp_path / "nowhere.safetensors")
    path = export_encoder(ImageEncoder("tiny"), tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"w.safetensors is not a readable safetensors file.*truncated"):
        checkpoint.read_weights(path)


def test_a_training_checkpoint_of_another_feature_design_resumes_with_statistics_to_refit(fit_statistics):
    """A checkpoint written under another design (here: none, the feature layer) holds no statistics, or other
    ones: training resumes from its network weights, and the statistics wait, unfitted, for the refit that every
    probe and the export do. Any other difference is still an error naming the checkpoint."""
    from utils.ema import ModelEMA

    old = ImageEncoder("tiny", feature_design=FeatureDesign())
    model = fit_statistics(ImageEncoder("tiny", feature_design=CENTRED))
    checkpoint.load_network_state(model, old.state_dict(), "checkpoint c.pt (model)", keep_statistics=False)
    assert torch.equal(model.feature_layer.weight, old.feature_layer.weight)
    assert float(model.feature_statistics_fitted) == 0.0
    assert torch.equal(model.feature_mean_stage4, torch.zeros_like(model.feature_mean_stage4))  # reset, not stale
    ema = ModelEMA(torch.nn.ModuleDict({"encoder": ImageEncoder("tiny", feature_design=CENTRED)}))
    ema.load_state_dict({f"encoder.{k}": v for k, v in old.state_dict().items()})
    assert torch.equal(ema.model["encoder"].feature_layer.weight, old.feature_layer.weight)
    broken = {**old.state_dict(), "feature_layer.bias": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="checkpoint c.pt"):
        checkpoint.load_network_state(model, broken, "checkpoint c.pt (model)", keep_statistics=False)


def test_a_weights_file_with_another_designs_statistics_loads_its_network_only(fit_statistics, tmp_path):
    """load_network_weights (the add-statistics command, fine-tuning): statistics of another design are dropped
    and the model's are left unfitted, never mixed with them; this design's are kept."""
    other = fit_statistics(ImageEncoder("tiny", feature_design=WHITENED))           # stage4 only, whitened
    path = export_encoder(other, tmp_path / "other.safetensors", metadata={"arch": "tiny"})
    model = checkpoint.load_network_weights(ImageEncoder("tiny", feature_design=CENTRED), path)
    assert torch.equal(model.feature_layer.weight, other.feature_layer.weight)
    assert float(model.feature_statistics_fitted) == 0.0
    same = fit_statistics(ImageEncoder("tiny", feature_design=CENTRED))
    path = export_encoder(same, tmp_path / "same.safetensors", metadata={"arch": "tiny"})
    model = checkpoint.load_network_weights(ImageEncoder("tiny", feature_design=CENTRED), path)
    assert float(model.feature_statistics_fitted) == 1.0
    assert torch.equal(model.feature_mean_stage3, same.feature_mean_stage3)


