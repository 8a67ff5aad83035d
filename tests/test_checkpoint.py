"""Checkpoints: atomic writes, safe loading, pruning, clear errors for damaged files."""
import pytest
import torch

from utils import checkpoint
from utils.checkpoint import CheckpointError


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
