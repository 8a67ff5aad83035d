"""The EMA of a model's weights: exact arithmetic on known numbers, the buffer policies, the momentum schedule."""
import math

import pytest
import torch

from utils.ema import ModelEMA, ema_momentum


def small_net(weight: float) -> torch.nn.Module:
    """Linear(2, 1) + BatchNorm1d(1), every parameter and running statistic set to `weight`."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        for tensor in [*net.parameters(), net[1].running_mean, net[1].running_var]:
            tensor.fill_(weight)
    net[1].num_batches_tracked.fill_(7)
    return net


def test_update_moves_each_weight_a_known_fraction_of_the_way():
    student = small_net(1.0)
    ema = ModelEMA(student)
    with torch.no_grad():
        for p in student.parameters():
            p.fill_(3.0)
    ema.update(student, momentum=0.75)                 # 0.75 * 1 + 0.25 * 3 = 1.5, exactly representable
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in ema.model.parameters())
    ema.update(student, momentum=0.5)                  # 0.5 * 1.5 + 0.5 * 3 = 2.25
    assert all(torch.equal(p, torch.full_like(p, 2.25)) for p in ema.model.parameters())
    ema.update(student, momentum=1.0)                  # momentum 1: the average does not move
    assert all(torch.equal(p, torch.full_like(p, 2.25)) for p in ema.model.parameters())
    ema.update(student, momentum=0.0)                  # momentum 0: a copy
    assert all(torch.equal(p, torch.full_like(p, 3.0)) for p in ema.model.parameters())


def test_the_average_is_a_separate_copy_without_gradients():
    student = small_net(1.0)
    ema = ModelEMA(student)
    assert type(ema.model) is type(student) and ema.model.state_dict().keys() == student.state_dict().keys()
    assert not any(p.requires_grad for p in ema.model.parameters())
    with torch.no_grad():
        student[0].weight.fill_(5.0)
    assert torch.equal(ema.model[0].weight, torch.ones(1, 2))      # not shared with the student


@pytest.mark.parametrize("policy, running_mean, batches", [("average", 1.5, 9), ("own", 1.0, 7)])
def test_buffer_policies(policy, running_mean, batches):
    """"average": batch norm's running statistics follow the weights' average, its counter is copied. "own": the
    averaged model's statistics are left to its own forward passes. Other buffers are never touched."""
    student = small_net(1.0)
    student.register_buffer("fitted_elsewhere", torch.zeros(2))      # e.g. feature statistics
    ema = ModelEMA(student, buffers=policy)
    with torch.no_grad():
        student[1].running_mean.fill_(3.0)
        ema.model.fitted_elsewhere.fill_(4.0)
    student[1].num_batches_tracked.fill_(9)
    ema.update(student, momentum=0.75)
    assert ema.model[1].running_mean.item() == running_mean
    assert ema.model[1].num_batches_tracked.item() == batches
    assert torch.equal(ema.model.fitted_elsewhere, torch.full((2,), 4.0))


def test_state_dict_round_trip_continues_the_same_average():
    student = small_net(1.0)
    first, second = ModelEMA(student), ModelEMA(small_net(0.0))
    with torch.no_grad():
        for p in student.parameters():
            p.fill_(3.0)
    first.update(student, momentum=0.75)
    second.load_state_dict(first.state_dict())
    first.update(student, momentum=0.5)
    second.update(student, momentum=0.5)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_momentum_rises_on_a_half_cosine():
    assert ema_momentum(0.0, start=0.996, end=1.0) == pytest.approx(0.996)
    assert ema_momentum(0.5, start=0.996, end=1.0) == pytest.approx(0.998)
    assert ema_momentum(1.0, start=0.996, end=1.0) == pytest.approx(1.0)
    assert ema_momentum(0.25, start=0.9, end=1.0) == pytest.approx(1.0 - 0.1 * (1 + math.cos(math.pi / 4)) / 2)
    assert ema_momentum(0.3, start=0.99, end=0.99) == pytest.approx(0.99)      # start == end: fixed
    assert ema_momentum(1.7, start=0.9) == pytest.approx(1.0)                   # progress is clamped


@pytest.mark.parametrize("call, message", [
    (lambda: ema_momentum(0.5, start=1.2), "start must be in"),
    (lambda: ema_momentum(0.5, start=0.99, end=0.9), "end must be in"),
    (lambda: ModelEMA(small_net(1.0), buffers="copy"), "buffers must be one of"),
    (lambda: ModelEMA("model"), "must be a torch.nn.Module"),
    (lambda: ModelEMA(small_net(1.0)).update(small_net(1.0), momentum=1.5), "momentum must be in"),
    (lambda: ModelEMA(small_net(1.0)).update(torch.nn.Linear(2, 1), momentum=0.9), "parameters"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
