"""Early stop never changes whether an example is fooled (PGD, spatial grid).

``early_stop=True`` only saves work on examples already misclassified; per example, the
success flag (and so every accuracy the evaluation reports) must equal the exhaustive run's,
on an undefended model and on a weakly defended one (FGSM-trained, Gaussian blur in front).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advdefense.attacks import FGSM, PGD, SpatialGrid
from advdefense.attacks.base import predict
from advdefense.nets import SmallCNN
from advdefense.preprocess import GaussianBlur


@pytest.fixture(scope="module")
def weak_cnn(mnist67_train) -> nn.Module:
    """Gaussian blur + a SmallCNN trained one epoch on FGSM(0.3) examples of 1,024 digits."""
    images, labels = mnist67_train
    x, y = images[:1024], labels[:1024]
    torch.manual_seed(0)
    net = SmallCNN()
    model = nn.Sequential(GaussianBlur(), net)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    attack = FGSM(eps=0.3)
    perm = torch.randperm(len(x))
    for i in range(0, len(x), 64):
        idx = perm[i:i + 64]
        adv = attack(model, x[idx], y[idx])
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.cat([x[idx], adv])),
                                           torch.cat([y[idx], y[idx]]))
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(params=["undefended", "weak"])
def model(request, undefended_cnn, weak_cnn) -> tuple[nn.Module, float]:
    """The model and a PGD radius at which some but not all of its examples fall."""
    return (undefended_cnn, 0.15) if request.param == "undefended" else (weak_cnn, 0.15)


def _same_success(attack_kwargs: dict, cls, model, x, y):
    full = cls(early_stop=False, **attack_kwargs).run(model, x, y)
    fast = cls(early_stop=True, **attack_kwargs).run(model, x, y)
    assert torch.equal(fast.success, full.success)
    assert torch.equal(fast.success, predict(model, fast.images) != y)
    assert (fast.queries <= full.queries).all()
    return full, fast


def test_pgd_early_stop_same_success(model, digits) -> None:
    (model, eps), x, y = model, digits[0][:64], digits[1][:64]
    kw = dict(eps=eps, alpha=0.02, steps=10, restarts=2, seed=5, batch_size=32)
    full, fast = _same_success(kw, PGD, model, x, y)
    assert 0 < int(full.success.sum()) < len(y)  # a mix of fooled and robust examples
    assert (fast.images - x).abs().max() <= eps + 1e-6
    # robust examples took the same path: same kept point
    robust = ~full.success
    torch.testing.assert_close(fast.images[robust], full.images[robust], atol=1e-6, rtol=0)
    assert int(fast.queries.sum()) < int(full.queries.sum())


def test_pgd_early_stop_margin_loss_and_targeted(model, digits) -> None:
    (model, eps), x, y = model, digits[0][:48], digits[1][:48]
    for kw in (dict(loss="margin"), dict(targeted=True)):
        _same_success(dict(eps=eps, alpha=0.02, steps=6, seed=1, **kw), PGD, model, x, y)


def test_pgd_early_stop_eps_zero_is_one_forward(model, digits) -> None:
    model, x, y = model[0], digits[0][:32], digits[1][:32]
    full, fast = _same_success(dict(eps=0.0, steps=5), PGD, model, x, y)
    assert torch.equal(fast.images, x) and (fast.queries == 1).all()


@pytest.mark.parametrize("preset", ["engstrom", "uae_warmup"])
def test_spatial_early_stop_same_success(preset, model, digits) -> None:
    model, x, y = model[0], digits[0][:64], digits[1][:64]
    # a coarser grid and small blocks: several blocks, images leaving between them
    kw = dict(preset=preset, n_angles=7, n_shifts=3, eval_batch=256, batch_size=32)
    full, fast = _same_success(kw, SpatialGrid, model, x, y)
    assert int(fast.queries.sum()) <= int(full.queries.sum())
    # not fooled: every candidate was evaluated and the same max-loss transform returned
    robust = ~full.success
    for key in ("angle", "dx", "dy"):
        assert torch.equal(fast.info[key][robust], full.info[key][robust])
    attack = SpatialGrid(early_stop=True, **kw)
    again = attack.transform(x, fast.info["angle"], fast.info["dx"], fast.info["dy"])
    torch.testing.assert_close(again, fast.images)

