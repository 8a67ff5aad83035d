"""Learning-rate schedule, parameter groups, LARS, collapse statistics."""
import math

import pytest
import torch

from utils import monitor, optim


def test_warmup_then_cosine():
    assert optim.lr_factor(0.0, 0.1) == 0.0
    assert optim.lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert optim.lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert optim.lr_factor(0.55, 0.1) == pytest.approx(0.5)
    assert optim.lr_factor(1.0, 0.1) == pytest.approx(0.0)
    assert optim.lr_factor(1.0, 0.1, final_ratio=0.01) == pytest.approx(0.01)
    values = [optim.lr_factor(p / 100, 0.1) for p in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_param_groups_exclude_biases_and_norms_from_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    decay, no_decay = optim.param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name, lr", [("adamw", 0.05), ("lars", 5.0)])
def test_optimizers_fit_a_regression(name, lr):
    torch.manual_seed(0)
    x = torch.randn(256, 10)
    y = x @ torch.randn(10, 1)
    model = torch.nn.Linear(10, 1, bias=False)   # LARS adapts weight matrices only
    opt = optim.build_optimizer(name, model, lr=lr, weight_decay=0.0, device=torch.device("cpu"))
    first = None
    for _ in range(200):
        loss = (model(x) - y).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first


def test_set_lr_and_unknown_optimizer():
    model = torch.nn.Linear(2, 2)
    opt = optim.build_optimizer("adamw", model, 1.0, 0.0, torch.device("cpu"))
    optim.set_lr(opt, 0.25)
    assert all(g["lr"] == 0.25 for g in opt.param_groups)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.build_optimizer("sgdd", model, 1.0, 0.0, torch.device("cpu"))


def test_collapse_statistics_separate_healthy_from_collapsed():
    torch.manual_seed(0)
    healthy = monitor.embedding_stats(torch.randn(256, 64))
    collapsed = monitor.embedding_stats(torch.randn(1, 64).repeat(256, 1) + 1e-4 * torch.randn(256, 64))
    one_dim = monitor.embedding_stats(torch.randn(256, 1) * torch.randn(1, 64))
    assert healthy["std_ratio"] > 0.9 and collapsed["std_ratio"] < 0.01
    assert healthy["eff_rank"] > 40 and one_dim["eff_rank"] < 1.5
    assert math.isfinite(float(collapsed["eff_rank"]))


def test_collapse_warning_fires_on_collapsed_embeddings_only():
    as_floats = lambda z: {k: float(v) for k, v in monitor.embedding_stats(z).items()}  # noqa: E731
    assert monitor.collapse_warning(as_floats(torch.randn(256, 64))) is None
    collapsed = as_floats(torch.randn(1, 64).repeat(256, 1) + 1e-4 * torch.randn(256, 64))
    assert "collapsing" in monitor.collapse_warning(collapsed)
    one_dim = as_floats(torch.randn(256, 1) * torch.randn(1, 64))
    assert "effective rank 1.0" in monitor.collapse_warning(one_dim)


def test_training_warns_once_when_a_loss_collapses_the_embeddings(tiny_data_dir, tmp_path, capsys, monkeypatch):
    import torch.nn.functional as F
    import utils.train as engine
    from utils.train import TrainConfig, train
    cfg = TrainConfig(arch="tiny", local_views=0, epochs=3, batch_size=64, lr=0.01, log_every=1, eval_every=0,
                      checkpoint_every=0, data_dir=str(tiny_data_dir), out_dir=str(tmp_path), progress=False)
    target = F.normalize(torch.ones(128), dim=0)
    # Pulls every embedding towards one direction: complete collapse within a few steps (measured: std ratio
    # 0.78 -> 0.02, effective rank 44 -> 1.2 over 15 steps).
    monkeypatch.setattr(engine, "make_objective", lambda cfg: lambda z, generator: -(F.normalize(z, dim=-1) @ target).mean())
    result = train(cfg)
    assert result.history["log"][-1]["eff_rank"] < 2
    assert capsys.readouterr().out.count("the embeddings are collapsing") == 1
