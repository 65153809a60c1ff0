"""What every attack promises: modes restored, no parameter gradients, checked inputs."""

from __future__ import annotations

import pytest
import torch
from attack_models import tiny_cnn
from torch import nn

from advdefense.attacks import (
    APGD,
    ATTACKS,
    FGSM,
    JSMA,
    PGD,
    LocalSearch,
    SparsePGD,
    SparseRS,
    SpatialGrid,
    build_attack,
)
from advdefense.attacks.cascade import Cascade
from advdefense.checks import ConfigError, ImageError

FAST = [FGSM(eps=0.1), PGD(eps=0.1, steps=2), JSMA(gamma=0.02),
        SpatialGrid(n_angles=3, n_shifts=3), LocalSearch(rounds=2, max_queries=200),
        SparsePGD(k=10, steps=2, restarts=2), SparseRS(k=10, max_queries=30),
        APGD(eps=0.1, steps=3, restarts=2),
        Cascade([APGD(eps=0.1, steps=2), APGD(eps=0.1, steps=2, loss="margin")])]


def _model() -> nn.Module:
    return nn.Sequential(tiny_cnn(1), nn.Dropout(0.5))


@pytest.mark.parametrize("attack", FAST, ids=lambda a: a.name)
def test_mode_restored_and_no_param_grads(attack, digits) -> None:
    model = _model().train()
    model[1].eval()  # a mixed mode must come back as it was
    x, y = digits[0][:8], digits[1][:8]
    out = attack(model, x, y)
    assert model.training and model[0].training and not model[1].training
    assert all(p.grad is None for p in model.parameters())
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not x.requires_grad and not out.requires_grad


@pytest.mark.parametrize("attack", FAST, ids=lambda a: a.name)
def test_chunking_and_empty_input(attack, digits) -> None:
    model = _model().eval()
    x, y = digits[0][:5], digits[1][:5]
    res = attack.run(model, x, y)
    assert res.success.shape == (5,) and res.queries.shape == (5,)
    assert all(v.shape[0] == 5 for v in res.info.values())
    empty = attack.run(model, x[:0], y[:0])
    assert empty.images.shape == (0, 1, 28, 28)


@pytest.mark.parametrize("attack", FAST, ids=lambda a: a.name)
@pytest.mark.parametrize("bad", ["shape", "range", "nan"])
def test_bad_images(attack, bad: str) -> None:
    x = torch.rand(2, 1, 28, 28)
    if bad == "shape":
        x = x[:, 0]
    elif bad == "range":
        x = x * 255
    else:
        x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ImageError):
        attack(_model(), x, torch.zeros(2, dtype=torch.int64))


@pytest.mark.parametrize("cls, kwargs", [
    (FGSM, dict(eps=1.5)), (FGSM, dict(eps=-0.1)), (PGD, dict(steps=0)),
    (PGD, dict(alpha=0.0)), (PGD, dict(restarts=0)), (PGD, dict(loss="hinge")),
    (PGD, dict(eps=float("nan"))), (JSMA, dict(theta=0.0)), (JSMA, dict(theta=2.0)),
    (JSMA, dict(gamma=0.0)), (LocalSearch, dict(max_queries=1)), (LocalSearch, dict(p=0.0)),
    (LocalSearch, dict(r=1.0)), (LocalSearch, dict(t=0)), (LocalSearch, dict(update="x")),
    (FGSM, dict(batch_size=0)), (SparsePGD, dict(k=0)), (SparsePGD, dict(direction="up")),
    (SparsePGD, dict(alpha=11.0)), (SparsePGD, dict(alpha=[1.0, -1.0])),
])
def test_bad_parameters_name_the_key(cls, kwargs) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    key = next(iter(kwargs))
    assert key in str(info.value) and repr(kwargs[key]) in str(info.value)


def test_registry() -> None:
    assert set(ATTACKS) == {"fgsm", "pgd", "jsma", "spatial", "local_search", "sparse_pgd",
                            "sparse_rs", "apgd", "cascade"}
    assert isinstance(build_attack("pgd", eps=0.2), PGD)
    with pytest.raises(ConfigError):
        build_attack("cw")


def test_configs_instantiate() -> None:
    from pathlib import Path

    from helpers import compose_option
    from hydra.utils import instantiate

    files = sorted((Path(__file__).parents[2] / "conf" / "attack").glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        cfg = compose_option("attack", path.stem)
        attack = instantiate(cfg)
        assert type(attack).__module__ + "." + type(attack).__name__ == cfg._target_
