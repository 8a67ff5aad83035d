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
