"""Training defenses: what the training step learns from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advdefense.attacks.fgsm import FGSM
from advdefense.checks import ConfigError
from advdefense.defenses import AdversarialTraining, MixedDefense, TrainingDefense


class LinearModel(nn.Module):
    """logits = [0, w . x]: the CE gradient w.r.t. x is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 1, 28, 28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x * self.w).flatten(1).sum(1, keepdim=True)
        return torch.cat([torch.zeros_like(z), z], 1)


def test_no_defense_returns_the_batch():
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])
    out_x, out_y = TrainingDefense()(nn.Identity(), x, y)
    assert out_x is x and out_y is y


def test_fgsm_defense_matches_closed_form_and_stays_in_ball():
    torch.manual_seed(0)
    model = LinearModel()
    x = torch.rand(6, 1, 28, 28) * 0.6 + 0.2
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    eps = 0.1
    out_x, out_y = AdversarialTraining(FGSM(eps=eps), adv_fraction=1.0)(model, x, y)
    assert out_x.shape[0] == 12 and torch.equal(out_y, torch.cat([y, y]))
    adv = out_x[6:]
    # d CE / d z for logits [0, z]: sigmoid(z) - y; d z / d x = w.
    z = (x * model.w).flatten(1).sum(1)
    sign = torch.sign((torch.sigmoid(z) - y.float())[:, None, None, None] * model.w)
    torch.testing.assert_close(adv, (x + eps * sign).clamp(0, 1))
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert model.w.grad is None


def test_fraction_and_replacement():
    model = LinearModel()
    x, y = torch.rand(10, 1, 28, 28), torch.randint(0, 2, (10,))
    out_x, out_y = AdversarialTraining(FGSM(eps=0.2), adv_fraction=0.3, keep_clean=False)(model, x, y)
    assert out_x.shape[0] == 10 and torch.equal(out_y, y)
    assert not torch.equal(out_x[:3], x[:3]) and torch.equal(out_x[3:], x[3:])


def test_mixed_defense_splits_the_batch():
    model = LinearModel()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 2, (8,))
    mixed = MixedDefense([TrainingDefense(), AdversarialTraining(FGSM(eps=0.2), keep_clean=False)])
    out_x, out_y = mixed(model, x, y)
    assert torch.equal(out_x[:4], x[:4]) and not torch.equal(out_x[4:], x[4:])
    assert torch.equal(out_y, y)


def test_mixed_defense_takes_its_parts_by_name_in_their_order():
    clean, adv = TrainingDefense(), AdversarialTraining(FGSM(eps=0.2), keep_clean=False)
    mixed = MixedDefense({"adv": adv, "clean": clean}, {"clean": 3.0, "adv": 1.0})
    assert mixed.defenses == [adv, clean] and mixed.shares == [0.25, 0.75]
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 2, (8,))
    out_x, _ = mixed(LinearModel(), x, y)
    assert not torch.equal(out_x[:2], x[:2]) and torch.equal(out_x[2:], x[2:])
    assert MixedDefense({"a": adv, "b": clean}, [1.0, 3.0]).shares == [0.25, 0.75]


@pytest.mark.parametrize("defenses, weights", [
    ({"a": TrainingDefense()}, {"b": 1.0}), ([TrainingDefense()], {"a": 1.0}),
    ({"a": TrainingDefense()}, [1.0, 1.0]), ({}, None), ({"a": TrainingDefense()}, {"a": 0.0})])
def test_mixed_defense_refuses_weights_that_do_not_match_its_parts(defenses, weights):
    with pytest.raises(ConfigError, match=r"defense\.(weights|defenses)"):
        MixedDefense(defenses, weights)


@pytest.mark.parametrize("kwargs", [{"adv_fraction": 0.0}, {"adv_fraction": 1.5}])
def test_bad_fraction(kwargs):
    with pytest.raises(ConfigError, match="defense.adv_fraction"):
        AdversarialTraining(FGSM(eps=0.1), **kwargs)


@pytest.mark.parametrize("name", sorted(p.stem for p in (
    __import__("pathlib").Path(__file__).parents[2] / "conf" / "defense").glob("*.yaml")))
def test_every_defense_config_builds_and_returns_a_valid_batch(name: str) -> None:
    from attack_models import tiny_cnn
    from helpers import compose_option
    from hydra.utils import instantiate

    from advdefense.defenses.base import TrainingDefense

    defense = instantiate(compose_option("defense", name))
    assert isinstance(defense, TrainingDefense)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 1, 28, 28, generator=g) > 0.8).float()
    y = torch.tensor([0, 1] * 4)
    out_x, out_y = defense(tiny_cnn(0), x, y)
    assert out_x.shape[1:] == x.shape[1:] and out_x.shape[0] == out_y.shape[0] >= x.shape[0]
    assert out_x.min() >= 0 and out_x.max() <= 1 and set(out_y.tolist()) <= {0, 1}


def test_validation_images_attack_every_image_and_keep_its_shape():
    model = LinearModel()
    x, y = torch.rand(10, 1, 28, 28) * 0.6 + 0.2, torch.randint(0, 2, (10,))
    assert TrainingDefense().validation_images(model, x, y) is None
    # adv_fraction and keep_clean shape training batches only: every validation image attacked
    adv = AdversarialTraining(FGSM(eps=0.2), adv_fraction=0.3).validation_images(model, x, y)
    assert adv.shape == x.shape
    torch.testing.assert_close(adv, FGSM(eps=0.2)(model, x, y))
    assert model.w.grad is None


def test_mixed_validation_images_keep_the_unattacked_part_clean():
    model = LinearModel()
    x, y = torch.rand(8, 1, 28, 28) * 0.6 + 0.2, torch.randint(0, 2, (8,))
    fgsm = AdversarialTraining(FGSM(eps=0.2), keep_clean=False)
    adv = MixedDefense([TrainingDefense(), fgsm]).validation_images(model, x, y)
    assert torch.equal(adv[:4], x[:4])  # the clean part's slice, as in training
    torch.testing.assert_close(adv[4:], FGSM(eps=0.2)(model, x[4:], y[4:]))
    assert MixedDefense([TrainingDefense(), TrainingDefense()]).validation_images(model, x, y) is None
