"""The one device chooser, and the batch size fitted to a shared GPU's free memory (simulated on the CPU)."""
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from utils.device import (BatchChoice, StepMemory, candidate_batch_sizes, fit_batch_to_memory, largest_fitting_batch,
                          measure_step_memory, pick_device)

ROOT = Path(__file__).resolve().parents[1]
GIB, MIB = 2**30, 2**20


def test_auto_is_the_gpu_only_when_there_is_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device(None).type == expected
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_a_missing_gpu_names_the_fix():
    with pytest.raises(ValueError, match="device='cuda:1' asked for, but no CUDA GPU.*use device=cpu"):
        pick_device("cuda:1")


def test_device_choice_is_implemented_once():
    """Every part of the kit calls utils.device.pick_device: no other file decides between CUDA and the CPU."""
    # `"cuda" if torch.cuda.is_available()` and `torch.device("cuda") if torch.cuda.is_available()`, also as
    # they appear, escaped, in the notebook's JSON.
    pattern = re.compile(r"""cuda\\?["']\)?\s+if\s+torch\.cuda\.is_available\(\)""")
    files = [p for p in [*ROOT.rglob("*.py"), *ROOT.glob("*.ipynb")]
             if not any(part.startswith(".venv") for part in p.parts) and p.name != "test_device.py"]
    offenders = sorted(str(p.relative_to(ROOT)) for p in files if pattern.search(p.read_text(encoding="utf-8")))
    assert offenders == ["utils/device.py"], offenders


def test_candidates_are_the_recipe_batch_then_powers_of_two_below():
    assert candidate_batch_sizes(512) == [512, 256, 128, 64, 32, 16, 8]
    assert candidate_batch_sizes(300) == [300, 256, 128, 64, 32, 16, 8]
    assert candidate_batch_sizes(8) == [8]


def test_a_crowded_gpu_gets_the_largest_power_of_two_that_fits_and_a_scaled_lr(capsys):
    # A 9.75 GiB card of which others use 3 GiB; simulated step cost: 1 GiB fixed + 24 MiB per image.
    memory = StepMemory(fixed_bytes=1 * GIB, per_image_bytes=24 * MIB, source="simulated")
    choice = fit_batch_to_memory(512, 2e-3, int(6.75 * GIB), memory)
    # 0.8 * 6.75 GiB = 5.4 GiB; 1 GiB + 128 * 24 MiB = 4 GiB fits, 256 images (7 GiB) do not.
    assert isinstance(choice, BatchChoice) and choice.batch_size == 128 and choice.reduced
    assert choice.lr == pytest.approx(2e-3 * 128 / 512)
    assert choice.needed_bytes <= 0.8 * 6.75 * GIB
    line = capsys.readouterr().out.strip()
    assert "\n" not in line, "one printed line"
    assert "batch_size=512 -> 128" in line and "lr=0.002 -> 0.0005" in line and "6.75 GiB free" in line


def test_enough_memory_keeps_the_recipe(capsys):
    memory = StepMemory(fixed_bytes=1 * GIB, per_image_bytes=24 * MIB, source="simulated")
    choice = fit_batch_to_memory(512, 2e-3, 139 * GIB, memory)
    assert (choice.batch_size, choice.lr, choice.reduced) == (512, 2e-3, False)
    assert "batch_size=512 fits" in capsys.readouterr().out


def test_the_data_reserve_and_the_margin_count():
    memory = StepMemory(fixed_bytes=0, per_image_bytes=10 * MIB, source="simulated")
    # 512 images need 5 GiB: they fit in 8 GiB free (6.4 GiB planned) but not once 2 GiB of data are reserved.
    assert fit_batch_to_memory(512, 1e-3, 8 * GIB, memory, echo=False).batch_size == 512
    assert fit_batch_to_memory(512, 1e-3, 8 * GIB, memory, reserve_bytes=2 * GIB, echo=False).batch_size == 256
    assert fit_batch_to_memory(512, 1e-3, 8 * GIB, memory, safety_fraction=0.5, echo=False).batch_size == 256


def test_a_batch_with_a_checkpoint_is_preferred(capsys):
    memory = StepMemory(fixed_bytes=0, per_image_bytes=10 * MIB, source="simulated")
    choice = fit_batch_to_memory(512, 1e-3, 100 * GIB, memory, prefer=lambda b: b == 128)
    assert choice.batch_size == 128 and choice.lr == pytest.approx(1e-3 / 4)
    assert "checkpoint" in capsys.readouterr().out
    # A preferred size that does not fit is not taken.
    assert fit_batch_to_memory(512, 1e-3, 1 * GIB, memory, prefer=lambda b: b == 512, echo=False).batch_size == 64


def test_nothing_fits_names_batch_size_and_the_free_memory():
    memory = StepMemory(fixed_bytes=2 * GIB, per_image_bytes=100 * MIB, source="simulated")
    with pytest.raises(MemoryError, match=r"batch_size=8 does not fit: the GPU has 1\.00 GiB free"):
        fit_batch_to_memory(512, 1e-3, 1 * GIB, memory)


def test_measuring_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("checks the error on a machine without CUDA")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        measure_step_memory(lambda b: None, torch.device("cpu"))


def test_the_notebook_fit_prefers_the_batch_of_a_run_it_can_resume(tiny_data_dir, tmp_path, monkeypatch, capsys):
    """fit_batch_to_gpu with a simulated GPU (free memory and step cost injected): 256 would fit, but a checkpoint
    of the same run at batch 64 (same settings, lr scaled, same custom loss) exists, so 64 is taken and resumed."""
    import dataclasses

    import utils.memory as memory
    from utils.config import TrainConfig, run_dir_of
    from utils.data import load_splits, prepare_data
    from utils.memory import fit_batch_to_gpu
    from utils.steps import code_signature

    data = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))       # 320 training images
    cfg = TrainConfig(arch="tiny", batch_size=256, lr=2e-3, out_dir=str(tmp_path))
    monkeypatch.setattr(memory, "measure_step_memory", lambda run_step, device: StepMemory(0, 10 * MIB, "simulated"))
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 100 * GIB)
    cuda = torch.device("cuda")                 # only its type is read: nothing runs on it here

    def my_loss(z, generator=None):
        return z.pow(2).mean()

    assert fit_batch_to_gpu(cfg, data, cuda, code=(my_loss,)).batch_size == 256
    assert "batch_size=256 fits" in capsys.readouterr().out
    resumable = dataclasses.replace(cfg, batch_size=64, lr=2e-3 * 64 / 256)
    checkpoints = run_dir_of(resumable, data.signature(), code_signature(my_loss)) / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "ckpt_step00000010.pt").write_bytes(b"")
    fitted = fit_batch_to_gpu(cfg, data, cuda, code=(my_loss,))
    assert (fitted.batch_size, fitted.lr) == (64, pytest.approx(5e-4))
    assert "a checkpoint of that run exists" in capsys.readouterr().out
    assert fit_batch_to_gpu(cfg, data, torch.device("cpu")) is cfg             # the CPU: nothing to fit


def test_out_of_memory_advice_finds_the_largest_batch_that_fits():
    def fits_up_to_100(batch):
        if batch > 100:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert largest_fitting_batch(fits_up_to_100, 512) == 64
    assert largest_fitting_batch(fits_up_to_100, 8) == 0


def test_the_full_profile_on_a_9_75_gib_share_fits_its_batch_and_trains(learn_data_dir, tiny_data_dir, tmp_path,
                                                                        monkeypatch):
    """The hub's GPU share reports 9.75 GiB in all. With the step memory of the engine measured on an H100
    (benchmarks/results/speed-resnet18_s2-nvidia-h100-80gb-hbm3-2026-11-24.json: batch 512, two 64-px views,
    3.86 GiB at peak with 100,000 training images on the GPU) stubbed as the trial would find it, split into a
    fixed part (weights, gradients, AdamW: 12 M parameters x 16 bytes, about 0.2 GiB) and the rest per image, the
    full profile keeps batch 512 on an empty share and with 4 GiB held by other processes, and halves it, with the
    learning rate, when they hold 6 GiB; the fitted recipe then trains (here on the CPU, with the tiny network)."""
    import utils.memory as memory
    from utils.config import recipe_config
    from utils.data import load_splits, prepare_data
    from utils.memory import fit_batch_to_gpu
    from utils.train import train

    data_bytes, peak, fixed = 100_000 * 64 * 64 * 3, 3.86 * GIB, 0.2 * GIB
    step = StepMemory(fixed, (peak - data_bytes - fixed) / 512, "stubbed from the H100 measurement")
    monkeypatch.setattr(memory, "measure_step_memory", lambda run_step, device: step)
    data = prepare_data(load_splits(learn_data_dir), torch.device("cpu"))          # 1,000 training images
    cfg = recipe_config("shipped", time_budget_min=20, out_dir=str(tmp_path))
    cuda = torch.device("cuda")                 # only its type is read: nothing runs on it here
    for held_by_others, expected in ((0.0, 512), (4.0, 512), (6.0, 256)):
        # the share's free memory once the course's 1.2 GB of training images are on it
        monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 9.75 * GIB - held_by_others * GIB - data_bytes)
        fitted = fit_batch_to_gpu(cfg, data, cuda)
        assert (fitted.batch_size, fitted.lr) == (expected, pytest.approx(cfg.lr * expected / 512)), held_by_others
    tiny = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))
    result = train(dataclasses.replace(fitted, arch="tiny", time_budget_min=0, epochs=1, local_views=1, eval_every=0,
                                       checkpoint_every=0, progress=False, device="cpu", eval_linear_iters=20), tiny)
    assert result.history["train"][-1]["step"] == 320 // 256
