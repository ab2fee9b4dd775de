"""The loss window (engine/meters.py): losses are kept per step and summed only when read, in
step order in float32, so the logged mean equals a running `+=` on the device to the bit,
however the window is folded, saved or resumed."""
import random

import pytest
import torch

from tubelet.engine import meters as meters_mod
from tubelet.engine.meters import Meters


def losses(seed: int, n: int) -> list[torch.Tensor]:
    """Float32 losses over 16 orders of magnitude, both signs: where the order of a float32
    sum changes its last bits."""
    rng = random.Random(seed)
    return [torch.tensor(rng.uniform(-1, 1) * 10.0 ** rng.randint(-8, 8)) for _ in range(n)]


def running_sum(values: list[torch.Tensor]) -> float:
    total = torch.zeros(())
    for v in values:
        total += v
    return total.item()


@pytest.mark.parametrize("seed", range(20))
def test_the_mean_is_a_running_float32_sum_to_the_bit(seed):
    values = losses(seed, 1 + seed * 3)
    m = Meters(torch.device("cpu"))
    for v in values:
        m.add_loss(v)
    assert m.read()["loss"] == running_sum(values) / len(values)


def test_a_long_window_is_folded_in_order(monkeypatch):
    monkeypatch.setattr(meters_mod, "MAX_KEPT", 4)
    values = losses(0, 11)
    m = Meters(torch.device("cpu"))
    for v in values:
        m.add_loss(v)
    assert len(m._losses) < 4  # folded twice, not kept whole
    assert m.read()["loss"] == running_sum(values) / 11


def test_a_window_saved_mid_way_resumes_to_the_same_mean():
    values = losses(1, 10)
    whole, first = Meters(torch.device("cpu")), Meters(torch.device("cpu"))
    for v in values:
        whole.add_loss(v)
    for v in values[:6]:
        first.add_loss(v)
    resumed = Meters(torch.device("cpu"))
    resumed.load_state_dict(first.state_dict())
    for v in values[6:]:
        resumed.add_loss(v)
    assert resumed.read()["loss"] == whole.read()["loss"]


def test_float32_overflow_is_inf_as_on_the_device():
    m = Meters(torch.device("cpu"))
    big = torch.tensor(3e38)
    m.add_loss(big), m.add_loss(big)
    assert m.read()["loss"] == running_sum([big, big]) / 2 == float("inf")
