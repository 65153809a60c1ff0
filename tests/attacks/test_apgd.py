"""APGD: the paper's schedule, the eps ball, toy models with known optima, and strength next to
PGD and torchattacks' APGD on a trained CNN."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from advdefense.attacks import APGD, PGD
from advdefense.attacks.apgd import checkpoints
from advdefense.attacks.base import predict
from advdefense.checks import ConfigError

HAVE_TA = importlib.util.find_spec("torchattacks") is not None


class Linear(nn.Module):
    """logits = (0, scale * (w . (x - x0)) + offset): margin of label 0 is linear in x."""

    def __init__(self, w: torch.Tensor, x0: float = 0.5, scale: float = 1.0,
                 offset: float = 0.0) -> None:
        super().__init__()
        self.w, self.x0, self.scale, self.offset = w, x0, scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * ((x - self.x0).flatten(1) @ self.w.flatten()) + self.offset
        return torch.stack([torch.zeros_like(z), z], 1)


class Bowl(nn.Module):
    """logits = (0, -||x - c||^2): label 0's margin is maximal at c and never positive."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = -((x - self.c) ** 2).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(z), z], 1)


def _signs(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (1, 28, 28), generator=g).float() * 2 - 1


def test_checkpoints_follow_the_paper() -> None:
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99: ceil(p * 100)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(200) == [44, 82, 114, 140, 160, 174, 186, 198]
    assert checkpoints(1) == [1]
    assert all(1 <= w <= 7 for w in checkpoints(7)) and checkpoints(7) == sorted(set(checkpoints(7)))


@pytest.mark.parametrize("kwargs", [dict(eps=1.5), dict(steps=0), dict(restarts=0),
                                    dict(loss="dlr"), dict(rho=0.0), dict(momentum=1.5)])
def test_bad_parameters_name_the_key(kwargs) -> None:
    with pytest.raises(ConfigError) as info:
        APGD(**kwargs)
    key = next(iter(kwargs))
    assert key in str(info.value) and repr(kwargs[key]) in str(info.value)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_stays_in_the_ball_and_the_box(loss, digits) -> None:
    x, y = digits[0][:32], digits[1][:32]
    model = Linear(_signs(1) / 784, scale=40.0)
    res = APGD(eps=0.2, steps=12, restarts=2, loss=loss, early_stop=False).run(model, x, y)
    assert (res.images - x).abs().max() <= 0.2 + 1e-6
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert bool((res.queries == 2 * 13).all())


def test_linear_model_reaches_the_corner_optimum() -> None:
    """For a linear margin the maximum over the ball is x + eps * sign(w): the first step
    (eta = 2 eps) lands there and no later point is better."""
    w = _signs(2) / 784
    model = Linear(w, scale=1.0, offset=-10.0)  # never fooled: the max-loss point is kept
    x = torch.full((3, 1, 28, 28), 0.5)
    y = torch.zeros(3, dtype=torch.int64)
    res = APGD(eps=0.1, steps=20, loss="margin", early_stop=False).run(model, x, y)
    assert torch.allclose(res.images, x + 0.1 * w.sign(), atol=1e-6)


def test_adaptive_step_converges_inside_the_ball() -> None:
    """A concave loss with its peak inside the ball: fixed-step PGD oscillates around it at
    +-alpha, APGD halves its step at the checkpoints and closes in."""
    x = torch.full((2, 1, 28, 28), 0.5)
    c = 0.5 + 0.07 * _signs(3)
    y = torch.zeros(2, dtype=torch.int64)
    model = Bowl(c)
    apgd = APGD(eps=0.3, steps=100, loss="margin", early_stop=False).run(model, x, y).images
    pgd = PGD(eps=0.3, alpha=0.03, steps=100, loss="margin").run(model, x, y).images
    assert (apgd - c).abs().max() < 0.01 < (pgd - c).abs().max()


def test_margin_loss_survives_saturated_cross_entropy() -> None:
    """Logits so large that CE's gradient underflows to zero: APGD-CE cannot move, APGD-margin
    still crosses the boundary (why the autoattack row runs both)."""
    model = Linear(_signs(4) / 784, scale=1000.0, offset=-200.0)  # margin in [-500, 100]
    x = torch.full((4, 1, 28, 28), 0.5)
    y = torch.zeros(4, dtype=torch.int64)
    ce = APGD(eps=0.3, steps=20, loss="ce").run(model, x, y)
    margin = APGD(eps=0.3, steps=20, loss="margin").run(model, x, y)
    assert not ce.success.any() and margin.success.all()


def test_early_stop_keeps_who_is_fooled_and_saves_queries(undefended_cnn, digits) -> None:
    x, y = digits[0][:64], digits[1][:64]
    slow = APGD(eps=0.1, steps=20, restarts=2, early_stop=False).run(undefended_cnn, x, y)
    fast = APGD(eps=0.1, steps=20, restarts=2, early_stop=True).run(undefended_cnn, x, y)
    assert torch.equal(slow.success, fast.success)
    assert 0 < int(fast.success.sum()) < 64
    assert int(fast.queries.sum()) < int(slow.queries.sum())
    assert torch.equal(predict(undefended_cnn, fast.images) != y, fast.success)


def test_more_restarts_never_weaken(undefended_cnn, digits) -> None:
    x, y = digits[0][:64], digits[1][:64]
    one = APGD(eps=0.08, steps=10, restarts=1).run(undefended_cnn, x, y)
    three = APGD(eps=0.08, steps=10, restarts=3).run(undefended_cnn, x, y)
    assert bool((three.success | ~one.success).all())


def test_eps_zero_returns_the_input(undefended_cnn, digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    res = APGD(eps=0.0).run(undefended_cnn, x, y)
    assert torch.equal(res.images, x) and bool((res.queries == 1).all())


def test_scaled_copies_the_configuration() -> None:
    a = APGD(eps=0.2, steps=50, restarts=2, loss="margin", seed=3)
    b = a.scaled(steps=2, restarts=3, seed=1)
    assert (b.eps, b.steps, b.restarts, b.loss, b.seed) == (0.2, 100, 6, "margin", 4)
    assert (a.steps, a.restarts, a.seed) == (50, 2, 3)


def _acc(model: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, adv) == y).float().mean())


@pytest.mark.slow
def test_at_least_as_strong_as_pgd_at_the_same_budget(undefended_cnn, mnist67_test) -> None:
    """eps 0.15 leaves accuracy mid-range (about 0.8 on this CNN): the budget matters."""
    x, y = mnist67_test[0][:200], mnist67_test[1][:200]
    apgd = APGD(eps=0.15, steps=100)(undefended_cnn, x, y)
    pgd = PGD(eps=0.15, alpha=0.15 / 16, steps=100, early_stop=True)(undefended_cnn, x, y)
    assert _acc(undefended_cnn, apgd, y) <= _acc(undefended_cnn, pgd, y) + 0.005


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TA, reason="torchattacks not installed (benchmark-only extra: "
                    "pip install --no-deps torchattacks==3.5.1)")
def test_no_weaker_than_torchattacks_apgd(undefended_cnn, mnist67_test) -> None:
    """Same model, images, eps, 100 steps, one restart; 0.15 leaves accuracy mid-range (about
    0.8 on this CNN, 128 images), 0.3 near zero (32 images: torchattacks has no early stop)."""
    import torchattacks as ta

    for eps, n in ((0.15, 128), (0.3, 32)):
        x, y = mnist67_test[0][:n], mnist67_test[1][:n]
        ours = _acc(undefended_cnn, APGD(eps=eps, steps=100)(undefended_cnn, x, y), y)
        ref = _acc(undefended_cnn, ta.APGD(undefended_cnn, eps=eps, steps=100)(x, y), y)
        assert ours <= ref + 0.005, (eps, ours, ref)
