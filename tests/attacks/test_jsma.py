"""JSMA: exact pair search, L0 budget, direction, effectiveness, theta < 0."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advdefense.attacks import JSMA
from advdefense.attacks.base import predict
from advdefense.attacks.jsma import best_pairs


def _pair_score(u, v, p, q):
    return (u.gather(1, p[:, None]) + u.gather(1, q[:, None])) * (
        v.gather(1, p[:, None]) + v.gather(1, q[:, None]))


@pytest.mark.parametrize("seed", range(6))
def test_pruned_pair_search_equals_exhaustive(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(16, 784, generator=g)
    v = -u * seed / 5 + torch.randn(16, 784, generator=g)
    if seed % 2:
        u, v = u.round(), v.round()  # many ties
    out = torch.rand(16, 784, generator=g) < 0.4
    u, v = u.masked_fill(out, float("-inf")), v.masked_fill(out, float("-inf"))
    p1, q1, f1 = best_pairs(u, v, exhaustive=True)
    p2, q2, f2 = best_pairs(u, v)
    assert torch.equal(f1, f2) and f1.any()
    torch.testing.assert_close(_pair_score(u, v, p2, q2)[f2], _pair_score(u, v, p1, q1)[f1])
    assert (p2 != q2).all() and not out.gather(1, p2[:, None]).any()


def test_no_valid_pair() -> None:
    u = torch.tensor([[1.0, 2.0, -5.0]])
    v = torch.tensor([[-1.0, -2.0, 1.0]])  # every pair has a sum <= 0
    assert not best_pairs(u, v)[2].any() and not best_pairs(u, v, exhaustive=True)[2].any()


@pytest.mark.parametrize("theta", [1.0, -1.0, 0.5])
def test_budget_direction_and_effect(undefended_cnn, digits, theta: float) -> None:
    x, y = digits[0][:64], digits[1][:64]
    gamma = 0.1
    res = JSMA(theta=theta, gamma=gamma).run(undefended_cnn, x, y)
    diff = (res.images - x).flatten(1)
    assert ((diff != 0).sum(1) <= gamma * 784).all()
    assert (diff >= 0).all() if theta > 0 else (diff <= 0).all()
    assert torch.equal(res.info["target"], 1 - y)
    flipped = (predict(undefended_cnn, res.images) == 1 - y).float().mean()
    assert flipped > (0.8 if theta == 1.0 else 0.6)
    assert torch.equal(res.success, predict(undefended_cnn, res.images) != y)


def test_fallback_moves_the_best_margin_pair_where_no_strict_pair_exists() -> None:
    from advdefense.attacks.jsma import _fallback_pairs

    u = torch.tensor([[1.0, 2.0, -5.0, 0.5], [1.0, 2.0, -5.0, 0.5]])
    v = torch.tensor([[-1.0, -2.0, 1.0, 0.1], [-3.0, -2.0, 1.0, -4.0]])  # no strict pair
    p, q, found = best_pairs(u, v)
    assert not found.any()
    p, q, found = _fallback_pairs(u, v, p, q, found)
    # row 0: u + v = [0, 0, -4, 0.6] -> pixels 3 and one of the zeros, sum 0.6 > 0: moved
    assert found.tolist() == [True, False]  # row 1: u + v = [-2, 0, -4, -3.5], best sum <= 0
    assert int(p[0]) == 3 and int(q[0]) in (0, 1)


def test_fallback_changes_the_result_where_ink_raises_both_logits() -> None:
    """``fallback`` is a real option: on a model where every pixel raises both logits (class 1
    twice as fast), no pair meets the paper's sign conditions, so the paper's JSMA stops at once;
    the fallback follows the margin and flips the prediction within the same budget."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([torch.ones(784), 2 * torch.ones(784)]))
        net[1].bias.copy_(torch.tensor([10.0, 0.0]))  # a blank image is class 0 by a margin of 10
    x, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    strict = JSMA(theta=1.0, gamma=0.1).run(net, x, y)
    loose = JSMA(theta=1.0, gamma=0.1, fallback=True).run(net, x, y)
    assert not strict.success.any() and torch.equal(strict.images, x)
    assert loose.success.all() and (loose.info["pixels"] <= 78).all()


@pytest.mark.parametrize("theta", [1.0, -1.0])
def test_fallback_keeps_budget_and_direction_and_is_no_weaker(undefended_cnn, digits,
                                                              theta: float) -> None:
    x, y = digits[0][:64], digits[1][:64]
    strict = JSMA(theta=theta, gamma=0.1).run(undefended_cnn, x, y)
    loose = JSMA(theta=theta, gamma=0.1, fallback=True).run(undefended_cnn, x, y)
    diff = (loose.images - x).flatten(1)
    assert ((diff != 0).sum(1) <= 0.1 * 784).all()
    assert (diff >= 0).all() if theta > 0 else (diff <= 0).all()
    # an example the strict search stopped on early can only move further
    assert loose.success.sum() >= strict.success.sum()


def test_target_saliency_picks_the_two_largest_target_gradients() -> None:
    from advdefense.attacks.jsma import _top_two

    u = torch.tensor([[0.1, 3.0, -1.0, 2.0], [float("-inf")] * 3 + [1.0]])
    p, q, found = _top_two(u)
    assert (int(p[0]), int(q[0])) == (1, 3) and found.tolist() == [True, False]


def test_target_saliency_budget_direction_and_bad_value(undefended_cnn, digits) -> None:
    from advdefense.checks import ConfigError

    x, y = digits[0][:64], digits[1][:64]
    res = JSMA(theta=1.0, gamma=0.1, saliency="target").run(undefended_cnn, x, y)
    diff = (res.images - x).flatten(1)
    assert ((diff != 0).sum(1) <= 0.1 * 784).all() and (diff >= 0).all()
    assert res.success.float().mean() > 0.8
    with pytest.raises(ConfigError, match="attack.saliency"):
        JSMA(saliency="softmax")


@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 30), theta=st.sampled_from([1.0, 0.4, -1.0]),
       saliency=st.sampled_from(["pair", "target"]), start=st.integers(0, 120))
def test_pixel_budget_k_on_real_digits(digits, k: int, theta: float, saliency: str,
                                       start: int) -> None:
    """Never more than k changed pixels, odd k included (the last pair moves one pixel)."""
    from attack_models import tiny_cnn

    x, y = digits[0][start:start + 4], digits[1][start:start + 4]
    attack = JSMA(theta=theta, k=k, saliency=saliency, fallback=True)
    res = attack.run(tiny_cnn(start % 5), x, y)
    changed = (res.images != x).flatten(1).sum(1)
    assert (changed <= k).all() and torch.equal(res.info["pixels"], changed)
    assert attack.threat_model.perturbation.k == k


def test_k_is_used_up_and_overrides_gamma(undefended_cnn, digits) -> None:
    from advdefense.checks import ConfigError

    x, y = digits[0][:32], digits[1][:32]
    res = JSMA(k=7, gamma=0.5, fallback=True).run(undefended_cnn, x, y)
    changed = res.info["pixels"]
    assert changed.max() == 7 and (changed[~res.success] == 7).all()  # odd budget reached
    assert JSMA(gamma=0.1).k == 78 and JSMA(gamma=0.145).k == 112
    strong = JSMA(k=40, fallback=True).run(undefended_cnn, x, y).success.sum()
    assert strong >= res.success.sum()
    for bad in (0, 785, 2.5):
        with pytest.raises(ConfigError, match="attack.k"):
            JSMA(k=bad)
