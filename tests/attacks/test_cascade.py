"""Cascade: each attack sees only the images still robust; the result is the per-example worst."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from advdefense.attacks import APGD, FGSM, PGD, Cascade
from advdefense.attacks.base import AttackResult, predict
from advdefense.checks import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf" / "attack"


class Brightness(nn.Module):
    """Predicts 1 where the mean pixel is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1).mean(1) - 0.5) * 100
        return torch.stack([torch.zeros_like(z), z], 1)


class Scripted:
    """Fools (makes white) the images whose marker pixel is below ``below``; the others get
    ``+0.01`` (so the returned image tells which attack produced it). Records its inputs."""

    def __init__(self, below: float) -> None:
        self.below, self.seen = below, []

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
            need_success: bool = True) -> AttackResult:
        self.seen.append(images[:, 0, 0, 0].clone())
        fool = images[:, 0, 0, 0] < self.below
        out = torch.where(fool[:, None, None, None], torch.ones_like(images), images + 0.01)
        return AttackResult(out.clamp(0, 1), predict(model, out) != labels,
                            torch.full((len(images),), 7, dtype=torch.int64))


def _markers(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark images (label 0, all correct) carrying the marker i / n in their first pixel."""
    x = torch.full((n, 1, 28, 28), 0.1)
    x[:, 0, 0, 0] = torch.arange(n) / n
    return x, torch.zeros(n, dtype=torch.int64)


def test_each_attack_sees_only_the_still_robust_images() -> None:
    x, y = _markers()
    first, second, third = Scripted(0.3), Scripted(0.6), Scripted(0.0)
    res = Cascade({"a": first, "b": second, "c": third}).run(Brightness(), x, y)
    marker = x[:, 0, 0, 0]
    assert torch.equal(first.seen[0], marker)
    assert torch.equal(second.seen[0], marker[marker >= 0.3])
    assert torch.equal(third.seen[0], marker[marker >= 0.6])
    assert res.info["fooled_by"].tolist() == [0, 0, 0, 1, 1, 1, -1, -1, -1, -1]
    assert res.success.tolist() == [True] * 6 + [False] * 4
    # fooled: the first fooling image; robust: the last attack's image
    assert torch.equal(res.images[:6], torch.ones_like(x[:6]))
    assert torch.allclose(res.images[6:], x[6:] + 0.01)
    # one clean query, then 7 per attack run
    assert res.queries.tolist() == [8, 8, 8, 15, 15, 15, 22, 22, 22, 22]


def test_misclassified_images_are_not_attacked() -> None:
    x, y = _markers()
    y[:3] = 1  # wrong labels: misclassified before any attack
    attack = Scripted(0.0)
    res = Cascade([attack]).run(Brightness(), x, y)
    assert len(attack.seen[0]) == 7 and res.success[:3].all() and not res.success[3:].any()
    assert torch.equal(res.images[:3], x[:3]) and res.info["fooled_by"][:3].tolist() == [-1] * 3


def test_accuracy_is_the_per_example_worst(undefended_cnn, digits) -> None:
    """Deterministic members (no random start): the cascade's robust set is exactly the images
    that every member alone fails on."""
    x, y = digits[0][:64], digits[1][:64]
    members = [FGSM(eps=0.08), PGD(eps=0.08, alpha=0.01, steps=10, random_start=False)]
    robust = torch.ones(64, dtype=torch.bool)
    for m in members:
        robust &= predict(undefended_cnn, m(undefended_cnn, x, y)) == y
    res = Cascade(members, eps=0.08).run(undefended_cnn, x, y)
    assert torch.equal(~res.success, robust)
    assert torch.equal(predict(undefended_cnn, res.images) == y, robust)
    assert 0 < int(robust.sum()) < 64  # both outcomes occur: the test can fail


def test_bad_members_name_the_key() -> None:
    with pytest.raises(ConfigError, match="attack.attacks"):
        Cascade([])
    with pytest.raises(ConfigError, match="attack.attacks.apgd_margin.eps"):
        Cascade({"apgd_ce": APGD(eps=0.3), "apgd_margin": APGD(eps=0.1)}, eps=0.3)
    with pytest.raises(ConfigError, match="attack.attacks.x"):
        Cascade({"x": object()})


def test_autoattack_config_builds_apgd_ce_then_margin() -> None:
    from hydra.utils import instantiate

    node = OmegaConf.load(CONF / "autoattack.yaml")
    attack = instantiate(node, eps=0.2)
    assert isinstance(attack, Cascade) and attack.names == ["apgd_ce", "apgd_margin"]
    assert [(a.eps, a.loss, a.steps) for a in attack.attacks] == [(0.2, "ce", 100),
                                                                  (0.2, "margin", 100)]
    doubled = attack.scaled(steps=2)
    assert [a.steps for a in doubled.attacks] == [200, 200] and doubled.names == attack.names
