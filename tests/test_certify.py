"""Certification: the Clopper-Pearson bound against scipy, Delta by hand, radii, certify()."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advdefense.ablation import AblatedClassifier, AblationMLP
from advdefense.certify import (
    ablated_parts,
    ablation_delta,
    betainc,
    certified_radius,
    certify,
    clopper_pearson_lower,
)
from advdefense.checks import ConfigError

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")


@pytest.mark.parametrize(("a", "b", "x"), [(1, 1, 0.3), (5, 3, 0.2), (5, 3, 0.9), (0.5, 2.5, 0.7),
                                           (9990, 11, 0.998), (100, 9901, 0.01), (5000, 5001, 0.5)])
def test_betainc_matches_scipy(a: float, b: float, x: float) -> None:
    ours = float(betainc(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                         torch.tensor(x, dtype=torch.float64)))
    assert ours == pytest.approx(float(scipy_special.betainc(a, b, x)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [1, 10, 100, 10_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_scipy(n: int, alpha: float) -> None:
    ks = sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1)))
    ours = clopper_pearson_lower(torch.tensor(ks), n, alpha)
    ref = [0.0 if k == 0 else float(scipy_stats.beta.ppf(alpha, k, n - k + 1)) for k in ks]
    torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_clopper_pearson_closed_form_when_all_succeed() -> None:
    # P(Binomial(n, p) >= n) = p^n = alpha  =>  p = alpha^(1/n)
    assert float(clopper_pearson_lower(10_000, 10_000, 0.001)) == pytest.approx(0.001 ** 1e-4, rel=1e-12)


def test_clopper_pearson_bad_input() -> None:
    with pytest.raises(ConfigError, match="certify.alpha"):
        clopper_pearson_lower(3, 10, 1.5)
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson_lower(11, 10)


def test_delta_by_hand() -> None:
    # d = 10, k = 3, rho = 2: 1 - C(8, 3) / C(10, 3) = 1 - 56 / 120
    assert ablation_delta(2, 3, 10) == pytest.approx(1 - 56 / 120)
    assert ablation_delta(0, 45) == 0.0
    # MNIST, k = 45, rho = 1: 1 - C(783, 45) / C(784, 45) = 45 / 784
    assert ablation_delta(1, 45) == pytest.approx(45 / 784)
    assert ablation_delta(8, 45) == pytest.approx(1 - math.prod((784 - 45 - i) / (784 - i) for i in range(8)))


def test_certified_radius_is_the_largest_rho_meeting_the_condition() -> None:
    p = torch.tensor([0.3, 0.5, 0.5 + 45 / 784 + 1e-9, 0.001 ** 1e-4], dtype=torch.float64)
    r = certified_radius(p, 45).tolist()
    assert r[:3] == [-1, -1, 1]
    rho = r[3]
    assert p[3] > 0.5 + ablation_delta(rho, 45) and not p[3] > 0.5 + ablation_delta(rho + 1, 45)


class _Const(nn.Module):
    """A base net whose vote is fixed per call: the true class, or a fair coin per sample."""

    def __init__(self, mode: str, label: int = 1) -> None:
        super().__init__()
        self.mode, self.label = mode, label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "true":
            return nn.functional.one_hot(torch.full((len(x),), self.label), 2).float()
        return torch.randn(len(x), 2)


def test_an_always_correct_model_certifies_the_maximal_radius() -> None:
    n, alpha, keep = 2_000, 0.001, 45
    model = AblatedClassifier(_Const("true", 1), keep=keep)
    images, labels = torch.rand(4, 1, 28, 28), torch.ones(4, dtype=torch.long)
    cert = certify(model, images, labels, n0=20, n=n, alpha=alpha, batch_size=1024)
    best = int(certified_radius(torch.tensor([alpha ** (1 / n)], dtype=torch.float64), keep)[0])
    assert best > 0
    assert cert.radius.tolist() == [best] * 4 and cert.correct.all()
    assert cert.counts.tolist() == [n] * 4
    assert cert.accuracy_at([0, best, best + 1]) == [1.0, 1.0, 0.0]


def test_a_coin_flip_model_certifies_nothing() -> None:
    torch.manual_seed(0)
    model = AblatedClassifier(_Const("coin"), keep=45)
    labels = torch.tensor([0, 1] * 5)
    cert = certify(model, torch.rand(10, 1, 28, 28), labels, n0=50, n=2_000, batch_size=4096)
    assert (cert.radius == -1).all() and (cert.pred == -1).all()
    assert cert.accuracy_at(range(0, 5)) == [0.0] * 5


def test_certify_refuses_models_without_ablation() -> None:
    with pytest.raises(TypeError, match="randomized-ablation"):
        certify(nn.Sequential(nn.Flatten(), nn.Linear(784, 2)), torch.rand(2, 1, 28, 28),
                torch.tensor([0, 1]))
    member = nn.Sequential()
    member.add_module("preprocess", nn.Identity())
    member.add_module("net", AblatedClassifier(AblationMLP([4]), keep=5))
    assert ablated_parts(member)[1] is member.net
