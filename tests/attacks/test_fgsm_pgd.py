"""FGSM and PGD: closed-form step, projections, strength, restarts, targeted, properties."""

from __future__ import annotations

import pytest
import torch
from attack_models import Linear, tiny_cnn
from hypothesis import given, settings
from hypothesis import strategies as st

from advdefense.attacks import FGSM, PGD
from advdefense.attacks.base import predict


def accuracy(model, images, labels) -> float:
    return (predict(model, images) == labels).float().mean().item()


def test_fgsm_matches_closed_form_on_linear_model() -> None:
    g = torch.Generator().manual_seed(1)
    w = 0.01 * torch.randn(784, generator=g)  # small: softmax never saturates
    model = Linear(w)
    x = torch.rand(6, 1, 28, 28, generator=g)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    # d CE / d x = (softmax_1 - [y == 1]) * w, so sign = sign(w) for y=0, -sign(w) for y=1.
    direction = torch.where(y[:, None] == 0, 1.0, -1.0) * w.sign()[None]
    expected = (x + 0.2 * direction.view(6, 1, 28, 28)).clamp(0, 1)
    out = FGSM(eps=0.2)(model, x, y)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out.min() >= 0 and out.max() <= 1
    assert (out == 0).any() and (out == 1).any()  # clipping happened
    # targeted at the other class steps the opposite way
    out_t = FGSM(eps=0.2, targeted=True)(model, x, y)
    torch.testing.assert_close(out_t, expected, atol=1e-6, rtol=0)


def test_pgd_projection_and_strength(undefended_cnn, digits) -> None:
    x, y = digits[0][:96], digits[1][:96]
    eps = 0.3
    res = PGD(eps=eps, alpha=0.05, steps=10).run(undefended_cnn, x, y)
    assert (res.images - x).abs().max() <= eps + 1e-6
    assert res.images.min() >= 0 and res.images.max() <= 1
    acc_pgd = accuracy(undefended_cnn, res.images, y)
    acc_fgsm = accuracy(undefended_cnn, FGSM(eps=eps)(undefended_cnn, x, y), y)
    assert acc_pgd <= acc_fgsm
    assert acc_pgd < 0.5 * accuracy(undefended_cnn, x, y)
    assert torch.equal(res.success, predict(undefended_cnn, res.images) != y)
    assert (res.queries == 11).all()


def test_pgd_restarts_never_weaken(undefended_cnn, digits) -> None:
    x, y = digits[0][:64], digits[1][:64]
    kw = dict(eps=0.08, alpha=0.02, steps=5, loss="margin", seed=3)
    one = PGD(restarts=1, **kw).run(undefended_cnn, x, y)
    three = PGD(restarts=3, **kw).run(undefended_cnn, x, y)
    assert (three.success | ~one.success).all()
    with torch.no_grad():
        m1 = undefended_cnn(one.images)
        m3 = undefended_cnn(three.images)
    margin1 = m1.gather(1, 1 - y[:, None]) - m1.gather(1, y[:, None])
    margin3 = m3.gather(1, 1 - y[:, None]) - m3.gather(1, y[:, None])
    assert (margin3 >= margin1 - 1e-5).all()


def test_pgd_eps_zero_changes_nothing(undefended_cnn, digits) -> None:
    x, y = digits[0][:32], digits[1][:32]
    assert torch.equal(PGD(eps=0.0, steps=3)(undefended_cnn, x, y), x)


def test_pgd_targeted_moves_to_target(undefended_cnn, digits) -> None:
    x, y = digits[0][:64], digits[1][:64]
    target = 1 - y
    adv = PGD(eps=0.3, alpha=0.03, steps=20, targeted=True)(undefended_cnn, x, y)
    assert (predict(undefended_cnn, adv) == target).float().mean() > 0.9


def test_pgd_best_iterate_not_worse_than_last(undefended_cnn, digits) -> None:
    # a large step makes the last iterate oscillate; the kept point is the best one
    x, y = digits[0][:64], digits[1][:64]
    res = PGD(eps=0.1, alpha=0.1, steps=4, random_start=False).run(undefended_cnn, x, y)
    assert accuracy(undefended_cnn, res.images, y) <= accuracy(
        undefended_cnn, FGSM(eps=0.1)(undefended_cnn, x, y), y)


@settings(max_examples=20, deadline=None)
@given(eps=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), n=st.integers(1, 5),
       which=st.sampled_from(["fgsm", "pgd"]))
def test_property_outputs_valid(eps: float, seed: int, n: int, which: str) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x[x < 0.3] = 0.0
    y = torch.randint(0, 2, (n,), generator=g)
    model = tiny_cnn(seed % 7)
    attack = FGSM(eps=eps) if which == "fgsm" else PGD(eps=eps, alpha=0.05, steps=3, seed=seed)
    out = attack(model, x, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.isnan(out).any()
    assert out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().max() <= eps + 1e-6


@pytest.mark.parametrize("attack", [FGSM(eps=0.1), PGD(eps=0.1, steps=2)])
def test_seeded_and_deterministic(attack, undefended_cnn, digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    assert torch.equal(attack(undefended_cnn, x, y), attack(undefended_cnn, x, y))
