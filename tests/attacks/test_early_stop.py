"""Early stop never changes whether an example is fooled (PGD, spatial grid); the kept point does.

``early_stop=True`` only saves work on examples already misclassified; per example, the
success flag (and so every accuracy the evaluation reports) must equal the exhaustive run's,
on an undefended model and on a weakly defended one (FGSM-trained, Gaussian blur in front).

The first fooling point is barely fooled, so its confidence (the largest logit) is low and
accuracy at 80% coverage abstains on it. ``select="confidence"`` without early stop keeps
attacking and keeps the most confident wrong answer: the same examples are fooled, each with a
confidence at least that of the first fooling point and of the highest-loss one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advdefense.attacks import FGSM, PGD, SparsePGD, SpatialGrid
from advdefense.attacks.base import predict
from advdefense.evaluation.metrics import accuracy_at_coverage
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



class MeanModel(nn.Module):
    """Logits (1, 1 + scale * (mean(x) - threshold)): class 1 iff the mean intensity exceeds
    ``threshold``, more confidently the further it does. Its input gradient is uniform, so PGD
    (no random start) moves every pixel by alpha per step: the mean too."""

    def __init__(self, threshold: float = 0.305, scale: float = 20.0) -> None:
        super().__init__()
        self.threshold, self.scale = threshold, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = 1.0 + self.scale * (x.mean((1, 2, 3)) - self.threshold)
        return torch.stack([torch.ones_like(z1), z1], 1)


def _confidence(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).amax(1)


def test_pgd_first_success_is_barely_fooled_confident_mode_is_not() -> None:
    """Five 6s at intensity 0.2 cross the threshold 0.305 at step 11 (mean 0.31, margin 0.1)
    and reach 0.5 (margin 3.9) by step 30; five 7s at 0.7 stay 7s at 0.4 (confidence 2.9)."""
    model = MeanModel()
    x = torch.cat([torch.full((5, 1, 28, 28), 0.2), torch.full((5, 1, 28, 28), 0.7)])
    y = torch.tensor([0] * 5 + [1] * 5)
    kw = dict(eps=0.3, alpha=0.01, steps=40, random_start=False)
    first = PGD(early_stop=True, **kw).run(model, x, y)
    best = PGD(early_stop=False, select="confidence", **kw).run(model, x, y)
    assert torch.equal(first.success, best.success)
    assert torch.equal(first.success, torch.tensor([True] * 5 + [False] * 5))
    margin = lambda z: z[:, 1] - z[:, 0]  # noqa: E731
    with torch.no_grad():
        assert (margin(model(first.images[:5])) < 0.2).all()  # just over the boundary
        assert (margin(model(best.images[:5])) > 3.8).all()
    assert (first.queries[:5] == 12).all() and (best.queries == 41).all()
    # the same plain accuracy, but 80% coverage keeps the confident errors only in best mode
    correct = [predict(model, r.images) == y for r in (first, best)]
    assert torch.equal(correct[0], correct[1]) and correct[0].float().mean() == 0.5
    acc_first = accuracy_at_coverage(correct[0], _confidence(model, first.images))[0]
    acc_best = accuracy_at_coverage(correct[1], _confidence(model, best.images))[0]
    assert acc_first == pytest.approx(5 / 8) and acc_best == pytest.approx(3 / 8)


def _modes(cls, kw: dict, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    first = cls(early_stop=True, **kw).run(model, x, y)
    loss = cls(early_stop=False, select="loss", **kw).run(model, x, y)
    best = cls(early_stop=False, select="confidence", **kw).run(model, x, y)
    assert torch.equal(best.success, first.success) and torch.equal(best.success, loss.success)
    assert torch.equal(best.success, predict(model, best.images) != y)
    fooled = best.success
    conf = {k: _confidence(model, r.images) for k, r in
            (("first", first), ("loss", loss), ("best", best))}
    assert (conf["best"][fooled] >= conf["first"][fooled] - 1e-4).all()
    # never fooled: the highest-loss point, whatever ``select``
    torch.testing.assert_close(best.images[~fooled], loss.images[~fooled], atol=1e-6, rtol=0)
    assert (best.queries <= loss.queries).all()  # fooled examples take no further restarts
    correct = ~fooled
    acc = {k: accuracy_at_coverage(correct, c)[0] for k, c in conf.items()}
    assert acc["best"] <= acc["first"]
    if kw.get("restarts", 1) == 1:  # the same candidates as the highest-loss search
        assert (conf["best"][fooled] >= conf["loss"][fooled] - 1e-4).all()
        assert acc["best"] <= acc["loss"]
    return first, best, conf, fooled


@pytest.mark.parametrize("restarts", [1, 2])
def test_pgd_confidence_mode_on_trained_models(restarts, model, digits) -> None:
    (model, eps), x, y = model, digits[0][:48], digits[1][:48]
    kw = dict(eps=eps, alpha=0.02, steps=10, restarts=restarts, seed=5, batch_size=32)
    first, best, conf, fooled = _modes(PGD, kw, model, x, y)
    assert 0 < int(fooled.sum()) < len(y)
    assert (best.images - x).abs().max() <= eps + 1e-6
    # the first fooling points are much less confident than the most confident ones
    assert float((conf["best"] - conf["first"])[fooled].mean()) > 0.05


def test_sparse_pgd_confidence_mode(undefended_cnn, digits) -> None:
    x, y = digits[0][:32], digits[1][:32]
    kw = dict(k=12, alpha=[1.0, 2.0], steps=8, restarts=2, seed=1)
    first, best, conf, fooled = _modes(SparsePGD, kw, undefended_cnn, x, y)
    assert int(fooled.sum()) > 0
    assert ((best.images != x).flatten(1).sum(1) <= 12).all()
    assert float((conf["best"] - conf["first"])[fooled].mean()) > 0.05


@pytest.mark.parametrize("preset", ["engstrom", "uae_warmup"])
def test_spatial_confidence_mode_is_the_most_confident_fooling_transform(
        preset, undefended_cnn, digits) -> None:
    x, y = digits[0][:24], digits[1][:24]
    kw = dict(preset=preset, n_angles=7, n_shifts=3, eval_batch=64, batch_size=12)
    first, best, conf, fooled = _modes(SpatialGrid, kw, undefended_cnn, x, y)
    assert int(fooled.sum()) > 0
    # brute force over the whole grid: the largest logit among allowed fooling transforms
    attack = SpatialGrid(select="confidence", **kw)
    params, before = attack.grid(), attack.border(x)
    top = torch.full((len(x),), float("-inf"))
    for angle, dx, dy in params.tolist():
        after = attack.transform(x, angle, dx, dy)
        with torch.no_grad():
            logits = undefended_cnn(after)
        ok = attack.allowed(before, after) & (logits.argmax(1) != y)
        top = torch.where(ok, torch.maximum(top, logits.amax(1)), top)
    torch.testing.assert_close(conf["best"][fooled], top[fooled], atol=1e-3, rtol=0)
    assert torch.equal(top.isfinite(), fooled)
