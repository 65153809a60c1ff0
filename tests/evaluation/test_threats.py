"""threats: the model copy attacks see, chunked prediction, and what a crafted cell reports."""

from __future__ import annotations

import torch
from eval_helpers import CountingAttack, data, linear_model
from torch import nn

from advdefense.attacks.base import AttackResult
from advdefense.evaluation.threats import (
    CLEAN,
    THREATS,
    AttackSpec,
    attackable,
    craft,
    predict_logits,
)
from advdefense.preprocess import FeatureSqueeze


def test_an_attack_runs_under_every_threat_model_unless_told_otherwise():
    assert THREATS == ("transfer", "whitebox", "blackbox") and CLEAN == "none"
    assert AttackSpec("pgd", None).threats == THREATS
    assert AttackSpec("ls", None, {}, ("blackbox",)).threats == ("blackbox",)


def test_attackable_is_a_straight_through_copy_with_the_same_forward_values():
    from advdefense.registry import CheckedModel

    squeeze = FeatureSqueeze(window=1, bits=1, straight_through=False)
    model = CheckedModel(nn.Sequential(squeeze, linear_model()).eval(), "squeeze-none")
    copy = attackable(model)
    assert not isinstance(copy, CheckedModel)  # input checks stay with the predicting model
    assert copy[0].straight_through and not squeeze.straight_through  # the original untouched
    x, _ = data(6)
    torch.testing.assert_close(copy(x), model(x))
    x.requires_grad_(True)
    (g_copy,) = torch.autograd.grad(copy(x)[:, 1].sum(), x)
    (g_orig,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    assert g_copy.abs().sum() > 0 and g_orig.abs().sum() == 0  # the rounding no longer masks
    copy[1][1].weight.data.zero_()
    assert model.model[1][1].weight.abs().sum() > 0  # a deep copy


def test_predict_logits_in_chunks_equals_one_pass():
    model, (x, _) = linear_model(), data(10)
    torch.testing.assert_close(predict_logits(model, x, batch_size=3), model(x))
    assert predict_logits(model, x[:0]).shape == (0, 2)
    assert not predict_logits(model, x).requires_grad


def test_craft_clean_plain_callable_and_attack_result():
    model, (x, y) = linear_model(), data(8)
    images, info = craft(AttackSpec(CLEAN, None), model, x, y)
    assert images is x and info == {}
    shifted, info = craft(AttackSpec("plain", lambda m, i, lab: i + 2.0), model, x, y)
    assert info == {} and shifted.max() <= 1 and torch.equal(shifted, torch.ones_like(x))

    class Reporting:
        def run(self, model, images, labels):
            n = len(images)
            return AttackResult(images, torch.zeros(n, dtype=torch.bool),
                                torch.arange(n) + 1,
                                {"angle": torch.linspace(0, 1, n) / 3, "variants": {"a": 1},
                                 "grid": torch.zeros(n, 2), "note": "kept"})

    _, info = craft(AttackSpec("rep", Reporting()), model, x, y)
    assert info["queries_mean"] == 4.5
    assert info["angle"] == [round(float(v) / 21, 4) for v in range(8)]  # lists, rounded
    assert info["variants"] == {"a": 1} and info["note"] == "kept"
    assert "grid" not in info  # not one value per example


def test_craft_returns_the_attacks_images_detached_in_the_unit_range():
    model, (x, y) = linear_model(), data(8)
    attack = CountingAttack(eps=0.3)
    adv, info = craft(AttackSpec("fgsm", attack), model, x, y)
    assert attack.calls == 1 and info == {"queries_mean": 1.0}
    assert not adv.requires_grad and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= 0.3 + 1e-6 and not torch.equal(adv, x)
