"""The fine-tuning evaluation (utils/finetune.py): it fine-tunes a copy, never the model or file it is given, and
labels raise ID accuracy above the frozen features' linear probe."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import ImageEncoder
from utils.checkpoint import export_encoder
from utils.data import load_splits
from utils.finetune import FinetuneConfig, finetune_copy, finetune_evaluation

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small tensors: see tests/conftest.py


def test_fine_tuning_beats_the_linear_probe_and_leaves_the_model_unchanged(learn_data_dir, tmp_path, fit_statistics):
    """A randomly initialised tiny ResNet on the embedded data (10 ID classes, 1000 train and 1000 val images):
    its frozen features' linear probe is near chance (10%); 8 epochs of fine-tuning with the labels (160 steps)
    must beat it by 5 points. Measured on one 2-core machine: 13.9% -> 28.5% (this seed), and 14.0% -> 27.9% for
    another initialisation (seed 1, with a 200-iteration probe); the standard error of an accuracy on 1000 images
    is about 1.4 points. The encoder's learning rate is the head's / 3 here, not the default / 10: a random
    encoder has nothing to preserve. About 25 s on a busy 2-core CPU, most of it the 160 training steps."""
    splits = load_splits(learn_data_dir)
    torch.manual_seed(0)
    model = fit_statistics(ImageEncoder("tiny"), splits["train"].images).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}     # weights and batch-norm statistics
    cfg = FinetuneConfig(epochs=8, batch_size=50, lr_head=3e-3, lr_encoder=1e-3, seed=0)
    result = finetune_evaluation(model, splits["train"], splits["val"], cfg, device="cpu", figure_dir=tmp_path)
    print(f"linear probe {result.linear_probe:.1f}%, fine-tuned {result.finetuned:.1f}%, {result.history}")
    assert result.finetuned >= result.linear_probe + 5, (result.linear_probe, result.finetuned)
    assert result.history[-1]["loss"] < result.history[0]["loss"], result.history
    assert result.steps == 8 * (1000 // 50) and len(result.val_predictions) == len(splits["val"])
    assert set(np.unique(result.val_predictions)) <= set(np.unique(splits["train"].labels))   # label ids, not 0..C-1
    assert (tmp_path / "finetune_confusion.png").is_file() and result.figure == str(tmp_path / "finetune_confusion.png")
    after = model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed
    assert not model.training                                                  # its mode is kept too


def test_the_copy_is_trained_and_the_global_random_state_is_left_alone(tiny_data_dir, fit_statistics):
    splits = load_splits(tiny_data_dir)
    torch.manual_seed(0)
    model = fit_statistics(ImageEncoder("tiny"), splits["train"].images[:64])
    rng_before = torch.get_rng_state()
    classifier, classes, history = finetune_copy(model, splits["train"].images[:64], splits["train"].labels[:64],
                                                 FinetuneConfig(epochs=1, batch_size=32), device="cpu")
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert classifier.encoder is not model
    stem = lambda m: m.backbone.stem[0].weight      # noqa: E731  (read by every feature design)
    assert not torch.equal(stem(classifier.encoder), stem(model))                              # it did train
    assert torch.equal(classifier.encoder.projector[0].weight, model.projector[0].weight)      # not used: frozen
    assert list(classes) == sorted(set(splits["train"].labels[:64])) and len(history) == 1
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        FinetuneConfig(epochs=0)


def test_command_line_reads_the_weights_file_only(tiny_data_dir, tmp_path):
    """python -m utils.finetune prints both accuracies and writes the JSON and the figure; the weights file keeps
    its bytes."""
    weights = export_encoder(ImageEncoder("tiny"), tmp_path / "final_model.safetensors", metadata={"arch": "tiny"})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    process = subprocess.run([sys.executable, "-m", "utils.finetune", "--weights", str(weights), "--data-dir",
                              str(tiny_data_dir), "--epochs", "1", "--batch-size", "32", "--max-train-images", "96",
                              "--device", "cpu", "--out", str(out), "--no-progress"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "linear probe on the frozen features" in process.stdout and "fine-tuned copy" in process.stdout
    record = json.loads((out / "finetune.json").read_text())
    accuracies = record["id_val_accuracy"]
    assert set(accuracies) == {"linear_probe", "finetuned"} and all(0 <= v <= 100 for v in accuracies.values())
    assert record["arch"] == "tiny" and record["n_train"] == 96 and record["settings"]["epochs"] == 1
    assert "forbids labels" in record["note"] and (out / "finetune_confusion.png").is_file()
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest


def test_command_line_names_a_missing_data_folder_without_a_traceback(tmp_path, capsys):
    from utils.finetune import main
    weights = export_encoder(ImageEncoder("tiny"), tmp_path / "final_model.safetensors", metadata={"arch": "tiny"})
    assert main(["--weights", str(weights), "--data-dir", str(tmp_path / "nowhere")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "nowhere" in error and "Traceback" not in error
