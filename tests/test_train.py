"""The training engine on the CPU (utils/train.py, utils/run_state.py, utils/steps.py): it learns, the caller's code
names the run, a killed or interrupted run resumes exactly, and running out of memory names a batch that fits."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models import FeatureDesign, ImageEncoder
from utils import probes
from utils.checkpoint import list_checkpoints, read_weights
from utils.data import load_splits
from utils.checkpoint import is_statistics_key
from utils.config import TrainConfig
from utils.run_state import TrainError
from utils.steps import build_networks, code_signature, make_objective
from utils.train import prepare_data, seed_all, start_run, train

ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"elapsed_s", "img_per_s"}


def tiny_config(data_dir, out_dir, **overrides):
    settings = dict(arch="tiny", local_views=0, temperature=0.1, epochs=3, batch_size=64, lr=2e-3, eval_every=1, checkpoint_every=1,
                    eval_linear_iters=50, log_every=2, data_dir=str(data_dir), out_dir=str(out_dir),
                    progress=False, seed=3)
    settings.update(overrides)
    return TrainConfig(**settings)


def without_timing(history):
    """History with wall-clock fields removed: everything else must be reproducible."""
    return {part: [{k: v for k, v in rec.items() if k not in TIMING_KEYS} for rec in records]
            for part, records in history.items()}


def test_training_learns_beyond_a_random_network(learn_data_dir, tmp_path):
    """SimCLR on the embedded data for 12 short epochs, against the same network at its initialisation.

    Both networks are probed through the reference design (the L2-normalised feature layer, FeatureDesign()),
    which uses no statistics of the training images: the shipped design whitens with them, which makes even a
    random network's features better (its linear probe: 12.0% through the reference design, 15.1% through the
    shipped one, on one 2-core machine), so through it the comparison would mix what training changed in the
    network with what whitening adds. The engine's own periodic probe (shipped design) must still be recorded,
    above chance.

    Self-supervision on this data is slow on a CPU (shared colour and clutter between two views are easy
    shortcuts), so the margins are modest, and float rounding differs between CPUs, so the figures move from
    machine to machine: through the reference design, k-NN 12.2% -> 13.5% and linear 12.0% -> 19.3% on one 2-core
    machine, k-NN 12.2% -> 15.7% and linear 13.3% -> 18.2% on another (the same code, the same data). k-NN moves
    slowly and noisily on this data, the linear probe steadily: the test asks k-NN to beat the initialisation and
    the linear probe to beat it by 3 points, which an untrained or broken run (a zero learning rate, a loss that
    ignores the views) does not.
    """
    cfg = tiny_config(learn_data_dir, tmp_path, epochs=12, batch_size=100, eval_every=12, lr=3e-3, seed=4)
    data = prepare_data(load_splits(learn_data_dir), torch.device("cpu"))
    seed_all(cfg.seed)
    random_net = ImageEncoder("tiny")   # train() seeds the same way: this is the trained network's initialisation
    initial = {k: v.clone() for k, v in random_net.state_dict().items()}
    result = train(cfg, data)
    losses = [r["loss"] for r in result.history["train"]]
    assert losses[-1] < losses[0] - 0.3, losses

    def reference_probes(weights: dict) -> tuple[float, float]:
        net = ImageEncoder("tiny", feature_design=FeatureDesign())
        net.load_state_dict({k: v for k, v in weights.items() if not is_statistics_key(k)}, strict=True)
        train_f, val_f = probes.encode_images(net, data.train.images), probes.encode_images(net, data.val.images)
        return (probes.knn_accuracy(train_f, data.train.labels, val_f, data.val.labels),
                probes.linear_accuracy(train_f, data.train.labels, val_f, data.val.labels, fast=True,
                                       max_iter=cfg.eval_linear_iters))

    (random_knn, random_linear), (knn, linear) = reference_probes(initial), reference_probes(
        read_weights(result.weights_path)[0])
    final = result.history["eval"][-1]
    print(f"reference design: init k-NN {random_knn:.1f}% linear {random_linear:.1f}%, trained k-NN {knn:.1f}% "
          f"linear {linear:.1f}%; engine's probe {final}; losses {losses}")
    assert knn > random_knn, (random_knn, knn)
    assert linear > random_linear + 3, (random_linear, linear)
    assert final["step"] == 120 and final["id_linear"] > 10, final       # recorded, above chance (10 classes)
    assert result.weights_path.is_file() and result.metrics_path.is_file()
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["steps"] == 12 * (1000 // 100) and metrics["final"]["id_knn"] == final["id_knn"]


def test_killed_run_resumes_to_the_same_history(tiny_data_dir, tmp_path):
    args = ["arch=tiny", "epochs=4", "batch_size=64", "eval_every=1", "checkpoint_every=1", "eval_linear_iters=50",
            "log_every=2", "seed=3", "progress=false", f"data_dir={tiny_data_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = subprocess.run([sys.executable, "-m", "utils.train", *args, f"out_dir={tmp_path / 'a'}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    killed_dir = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "utils.train", *args, f"out_dir={killed_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not list(killed_dir.glob("*/checkpoints/ckpt_*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoints = list_checkpoints(next(killed_dir.glob("*/checkpoints")))
    assert checkpoints and checkpoints[-1].name != "ckpt_step00000020.pt", "the run finished before it was killed"

    resumed = subprocess.run([sys.executable, "-m", "utils.train", *args, f"out_dir={killed_dir}"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stdout
    a = json.loads(next((tmp_path / "a").glob("*/training_metrics.json")).read_text())
    b = json.loads(next(killed_dir.glob("*/training_metrics.json")).read_text())
    assert a["steps"] == b["steps"] == 4 * (320 // 64)
    for part in ("train", "eval", "log"):
        assert without_timing({part: b[part]}) == without_timing({part: a[part]}), part


def test_changed_settings_start_a_new_run(tiny_data_dir, tmp_path):
    data = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))
    first = train(tiny_config(tiny_data_dir, tmp_path, epochs=1, eval_every=0), data)
    second = train(tiny_config(tiny_data_dir, tmp_path, epochs=1, eval_every=0, lr=1e-3), data)
    assert first.run_dir != second.run_dir
    with pytest.raises(TrainError, match="belongs to another run"):
        train(tiny_config(tiny_data_dir, tmp_path, epochs=1, lr=5e-4, run_name=first.run_dir.name), data)


def test_time_budget_fits_the_schedule(tiny_data_dir, tmp_path):
    """A 3-second budget ends at the first step after it (on a busy machine one step can take seconds), with the
    cosine at its end. log_every=1: the last log record is the last step, and each record times its step."""
    cfg = tiny_config(tiny_data_dir, tmp_path, time_budget_min=0.05, epochs=1000, eval_every=0, log_every=1)
    result = train(cfg)
    trained_s = json.loads(result.metrics_path.read_text())["train_minutes"] * 60
    longest_step_s = max(cfg.batch_size / record["img_per_s"] for record in result.history["log"])
    assert 3.0 - 0.06 <= trained_s <= 3.0 + longest_step_s + 0.5, (trained_s, longest_step_s)   # minutes to 3 decimals
    assert result.history["log"][-1]["lr"] < 0.05 * cfg.lr      # the cosine reached its end


def test_time_based_checkpoints_leave_the_history_unchanged(tiny_data_dir, tmp_path, one_torch_thread):
    """A checkpoint after every step (checkpoint_every_min as good as 0) lands inside log windows (log_every=2,
    5 steps an epoch): the history is the one of a run without them, step for step, and so is the weights file."""
    from safetensors.torch import load_file
    data = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))
    plain = train(tiny_config(tiny_data_dir, tmp_path / "a", epochs=2, eval_every=0, checkpoint_every=0), data)
    often = train(tiny_config(tiny_data_dir, tmp_path / "b", epochs=2, eval_every=0, checkpoint_every=0,
                              checkpoint_every_min=1e-9, keep_checkpoints=20), data)
    assert len(list((often.run_dir / "checkpoints").glob("ckpt_*.pt"))) >= 9          # (nearly) every step
    assert [r["step"] for r in often.history["log"]] == [2, 4, 5, 6, 8, 10]
    assert without_timing(often.history) == without_timing(plain.history)
    a, b = load_file(plain.weights_path), load_file(often.weights_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("loss", ["vicreg", "lejepa"])
def test_other_objectives_run(tiny_data_dir, tmp_path, loss):
    result = train(tiny_config(tiny_data_dir, tmp_path, loss=loss, epochs=1, eval_every=0))
    assert np.isfinite(result.history["train"][-1]["loss"])


def test_batch_larger_than_data_is_refused(tiny_data_dir, tmp_path):
    with pytest.raises(ValueError, match="larger than the training set"):
        train(tiny_config(tiny_data_dir, tmp_path, batch_size=10_000))


def test_out_of_memory_mid_run_keeps_the_newest_checkpoint_and_names_batch_size(tiny_data_dir, tmp_path, monkeypatch,
                                                                               capsys):
    """A step that runs out of memory (simulated: the 12th step raises torch.cuda.OutOfMemoryError, as CUDA does when
    another user takes the memory mid-run) ends the run with a TrainError naming batch_size and a batch that
    fits; the newest checkpoint, written before, still loads, and the same settings resume from it."""
    import utils.train as engine
    from utils.checkpoint import latest_checkpoint, load_checkpoint
    cfg = tiny_config(tiny_data_dir, tmp_path, epochs=4, eval_every=0)     # 320 // 64 = 5 steps an epoch
    data = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))
    real_step, calls = engine.training_step, []

    def step_then_out_of_memory(*args, **kwargs):
        calls.append(1)
        if len(calls) == 12:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "training_step", step_then_out_of_memory)
    with pytest.raises(TrainError, match=r"batch_size=64 ran out of GPU memory.*run with batch_size=32.*"
                                         r"newest checkpoint is kept"):
        train(cfg, data)
    newest = latest_checkpoint(next(tmp_path.glob("*/checkpoints")))
    assert newest is not None and newest.name == "ckpt_step00000010.pt"    # the ends of epochs 1 and 2
    saved = load_checkpoint(newest)
    assert (saved["step"], saved["epoch"]) == (10, 2)

    monkeypatch.setattr(engine, "training_step", real_step)
    capsys.readouterr()
    resumed = train(cfg, data)
    assert "from ckpt_step00000010.pt: step 10, epoch 2" in capsys.readouterr().out
    assert resumed.history["train"][-1]["step"] == 20 and len(resumed.history["train"]) == 4


def test_max_train_images_trains_on_every_class_of_a_class_sorted_set(tmp_path):
    """`python -m utils.train max_train_images=N` on a class-sorted file: the N images are spread over the set
    (utils.data.spread_rows), so every class is there (the first N rows would hold a few classes only)."""
    from utils.synthetic import DataSpec, write_dataset
    data_dir = tmp_path / "data"
    write_dataset(data_dir, DataSpec(id_classes=6, train_per_class=20, val_per_class=4, ood_classes=4,
                                     ood_per_class=10), seed=0, progress=False)
    labels = np.load(data_dir / "train.npz")["labels"]
    assert len(np.unique(labels[:20])) == 1                      # the generator writes the classes in order
    out = tmp_path / "runs"
    process = subprocess.run([sys.executable, "-m", "utils.train", "arch=tiny", "epochs=1", "batch_size=12",
                              "max_train_images=24", "local_views=0", f"data_dir={data_dir}", f"out_dir={out}",
                              "eval_every=0", "progress=false", "device=cpu"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout + process.stderr
    metrics = json.loads(next(out.glob("*/training_metrics.json")).read_text())
    assert metrics["data"]["n_train"] == 24
    trained = prepare_data(load_splits(data_dir), torch.device("cpu"), max_train_images=24).train.labels
    assert len(np.unique(trained)) == 6, trained                # every class, 4 images each
    assert len(np.unique(labels[:24])) == 2                      # what the first 24 rows would have given


# ----------------------------------------------------------------------------------------------------------
# The caller's code (the notebook's functions and optimizer) names the run; an EMA of the encoder; DINO
# ----------------------------------------------------------------------------------------------------------

# (one_torch_thread: tests/conftest.py)

def first_version():
    def custom_loss_function(z, generator=None):
        return (z[0] - z[1]).pow(2).mean()
    return custom_loss_function


def edited_version():
    def custom_loss_function(z, generator=None):
        return (z[0] - z[1]).abs().mean()          # the edit
    return custom_loss_function


def test_the_callers_code_names_the_run_folder(tiny_data_dir, tmp_path, capsys, one_torch_thread):
    """start_run's `code` (the notebook's functions and its optimizer) goes into the run's id: the same code
    resumes, an edited function or another optimizer setting starts a new folder, the engine's own another."""
    data = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))
    cfg = tiny_config(tiny_data_dir, tmp_path, epochs=1, eval_every=0)

    def run_dir(*functions, weight_decay=None, save=False):
        model, _, optimizer = build_networks(cfg, torch.device("cpu"))
        if weight_decay is not None:
            optimizer.param_groups[0]["weight_decay"] = weight_decay
        with start_run(cfg, data, model, optimizer, code=(*functions, optimizer)) as run:
            if save:
                run.save()
            return run.run_dir

    first = run_dir(first_version(), save=True)
    assert run_dir(first_version()) == first and "Resuming" in capsys.readouterr().out
    assert len({first, run_dir(edited_version()), run_dir(first_version(), weight_decay=0.5)}) == 3
    model, _, optimizer = build_networks(cfg, torch.device("cpu"))
    with start_run(cfg, data, model, optimizer) as run:          # the engine's own functions: no code
        assert run.run_dir != first
        assert run.run_dir.name == f"ntxent-{cfg.fingerprint(data.signature())}"


def test_code_signature_uses_the_name_when_the_source_is_unavailable_and_says_so(capsys):
    namespace = {}
    exec("def typed_in_a_shell(z, generator=None):\n    return z.sum()\n", namespace)   # no source file
    fallback = code_signature(namespace["typed_in_a_shell"])
    assert "source of" in capsys.readouterr().out and len(fallback) == 8
    assert code_signature(namespace["typed_in_a_shell"]) == fallback
    assert code_signature(first_version()) != code_signature(edited_version())
    assert code_signature(None, None) == ""


def test_a_loop_without_record_step_is_stopped(tiny_data_dir, tmp_path):
    """Each batch must be followed by run.record_step: otherwise the epoch would never end."""
    data = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))
    cfg = tiny_config(tiny_data_dir, tmp_path, epochs=1, eval_every=0)
    model, _, optimizer = build_networks(cfg, torch.device("cpu"))
    with pytest.raises(TrainError, match="record_step"):
        with start_run(cfg, data, model, optimizer) as run:
            for _ in run.epoch_batches():
                pass


def test_the_notebook_loop_refuses_dino(tiny_data_dir, tmp_path):
    cfg = tiny_config(tiny_data_dir, tmp_path, loss="dino", ema_momentum=0.9)
    data = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))
    model, _, optimizer = build_networks(cfg, torch.device("cpu"), with_head=False)
    with pytest.raises(ValueError, match="trains a prototype head and a teacher"):
        start_run(cfg, data, model, optimizer)
    with pytest.raises(ValueError, match="needs its head and teacher"):
        make_objective(cfg)


@pytest.mark.parametrize("recipe", [
    dict(ema_momentum=0.9),                                                    # ntxent + EMA export
    dict(loss="dino", ema_momentum=0.9, dino_prototypes=64, local_views=2, local_size=40),
])
def test_averaged_weights_are_exported_and_an_interrupted_run_resumes_exactly(tiny_data_dir, tmp_path, monkeypatch,
                                                                              recipe, one_torch_thread):
    """Train 2 epochs straight: the export is the averaged encoder only (no head, no teacher keys) and loads
    strictly. Train the same, interrupted after step 7 (a KeyboardInterrupt, which saves a checkpoint, with one
    step's loss not yet logged) and resumed: the EMA, DINO's head and centre, the exported weights and the history
    all match."""
    import utils.train as engine
    from safetensors import safe_open
    from safetensors.torch import load_file
    from utils.checkpoint import latest_checkpoint, load_checkpoint, load_weights_strict
    data = prepare_data(load_splits(tiny_data_dir), torch.device("cpu"))
    straight = train(tiny_config(tiny_data_dir, tmp_path / "a", epochs=2, eval_every=0, **recipe), data)
    model = load_weights_strict(ImageEncoder("tiny"), straight.weights_path)      # no head, no teacher keys
    saved = load_checkpoint(latest_checkpoint(straight.run_dir / "checkpoints"))
    averaged = {k[len("encoder."):]: v for k, v in saved["ema"].items() if k.startswith("encoder.")}
    exported = model.state_dict()
    assert exported.keys() == averaged.keys() == saved["model"].keys()
    assert all(torch.equal(exported[k], averaged[k]) for k in exported)          # the EMA, not the last weights
    assert not all(torch.equal(exported[k], saved["model"][k]) for k in exported)
    with safe_open(str(straight.weights_path), "pt") as f:
        assert f.metadata()["weights"] == "ema"
    if recipe.get("loss") == "dino":
        assert saved["head"]["prototypes"].shape == (64, 128) and saved["dino"]["center"].shape == (64,)
        assert any(k.startswith("head.") for k in saved["ema"])                  # the teacher's head stays here

    step_name = "self_distillation_step" if recipe.get("loss") == "dino" else "training_step"
    real_step, calls = getattr(engine, step_name), []

    def interrupted_at_step_8(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:                  # steps 1-7 done; logged at 2, 4, 5 (epoch end), 6: not step 7
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    cfg = tiny_config(tiny_data_dir, tmp_path / "b", epochs=2, eval_every=0, **recipe)
    monkeypatch.setattr(engine, step_name, interrupted_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data)
    saved = load_checkpoint(latest_checkpoint(next((tmp_path / "b").glob("*/checkpoints"))))
    assert (saved["step"], saved["window_steps"]) == (7, 1)
    monkeypatch.setattr(engine, step_name, real_step)
    resumed = train(cfg, data)

    assert without_timing(resumed.history) == without_timing(straight.history)
    a, b = load_file(straight.weights_path), load_file(resumed.weights_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    final_a = load_checkpoint(latest_checkpoint(straight.run_dir / "checkpoints"))
    final_b = load_checkpoint(latest_checkpoint(resumed.run_dir / "checkpoints"))
    for part in ("ema", "head", "dino"):
        if final_a[part] is None:
            assert final_b[part] is None and part != "ema"
            continue
        assert all(torch.equal(final_a[part][k], final_b[part][k]) for k in final_a[part]), part
