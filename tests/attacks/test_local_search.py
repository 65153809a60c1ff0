"""Local search: query-only (no backward), within budget, effective."""

from __future__ import annotations

import pytest
import torch
from attack_models import NoBackward, tiny_cnn

from advdefense.attacks import LocalSearch
from advdefense.attacks.base import predict


def test_no_backward_model_raises_on_backward(digits) -> None:
    model = NoBackward(tiny_cnn())
    x = digits[0][:2].clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="backward"):
        model(x).sum().backward()


def test_query_only_within_budget_and_effective(undefended_cnn, digits) -> None:
    x, y = digits[0][:12], digits[1][:12]
    model = NoBackward(undefended_cnn)
    grads = [None if p.grad is None else p.grad.clone() for p in undefended_cnn.parameters()]
    res = LocalSearch(max_queries=1500, rounds=20, eval_batch=2048).run(model, x, y)
    assert (res.queries <= 1500).all() and (res.queries >= 1).all()
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert torch.equal(res.success, predict(undefended_cnn, res.images) != y)
    clean = (predict(undefended_cnn, x) == y).float().mean()
    adv = (predict(undefended_cnn, res.images) == y).float().mean()
    assert adv <= clean - 0.5
    for p, g in zip(undefended_cnn.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


@pytest.mark.parametrize("budget", [2, 3, 50, 333])
def test_budget_never_exceeded(undefended_cnn, digits, budget: int) -> None:
    x, y = digits[0][:6], digits[1][:6]
    res = LocalSearch(max_queries=budget, rounds=50, d=2).run(undefended_cnn, x, y)
    assert (res.queries <= budget).all()
    if budget >= 50:
        assert (res.queries[~res.success] >= budget - 10).all()  # the budget is used


def test_cyclic_update_and_seeding(undefended_cnn, digits) -> None:
    x, y = digits[0][:4], digits[1][:4]
    a = LocalSearch(update="cyclic", r=1.5, rounds=3, max_queries=500, seed=1)
    out1, out2 = a(undefended_cnn, x, y), a(undefended_cnn, x, y)
    assert torch.equal(out1, out2)
    changed = out1 != x
    # CYC(1.5 z) maps black (0) to 0.75 and white (1) to 0.25
    assert changed.any()
    assert torch.allclose(out1[changed & (x == 0)], torch.tensor(0.75))


@pytest.mark.parametrize("update", ["probe", "cyclic"])
def test_eps_bound_keeps_every_query_in_the_linf_ball(undefended_cnn, digits, update) -> None:
    x, y = digits[0][:12], digits[1][:12]
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images):
            seen.append(images.detach().clone())
            return undefended_cnn(images)

    res = LocalSearch(eps=0.3, max_queries=1500, rounds=20, update=update).run(Recorder(), x, y)
    assert float((res.images - x).abs().max()) <= 0.3 + 1e-6
    assert res.images.min() >= 0 and res.images.max() <= 1
    # every queried image (probes included) lies in the ball around its own original
    bounded = torch.cat(seen).flatten(1)
    assert bounded.shape[0] > len(x)
    origin_dist = torch.cdist(bounded, x.flatten(1), p=float("inf")).min(1).values
    assert float(origin_dist.max()) <= 0.3 + 1e-6
    if update == "probe":
        assert res.success.any()  # an undefended CNN falls to some L-inf 0.3 pixel moves


def test_eps_zero_changes_nothing(undefended_cnn, digits) -> None:
    x, y = digits[0][:6], digits[1][:6]
    res = LocalSearch(eps=0.0, max_queries=300, rounds=5).run(undefended_cnn, x, y)
    assert torch.equal(res.images, x)


@pytest.mark.parametrize("k", [1, 4, 15])
def test_pixel_budget_holds_for_every_probe(undefended_cnn, digits, k: int) -> None:
    """With ``k``, every queried image (probes included) differs from its original in <= k
    pixels, and the search still uses the pixels it has."""
    x, y = digits[0][:8], digits[1][:8]
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images):
            seen.append(images.detach().clone())
            return undefended_cnn(images)

    attack = LocalSearch(k=k, max_queries=1200, rounds=25, d=3)
    res = attack.run(Recorder(), x, y)
    assert ((res.images != x).flatten(1).sum(1) <= k).all()
    queried = torch.cat(seen).flatten(1)
    nearest = torch.stack([(queried != row).sum(1) for row in x.flatten(1)]).amin(0)
    assert (nearest <= k).all() and (nearest == k).any()  # the budget binds, and is used
    assert attack.threat_model.perturbation.k == k


def test_pixel_budget_helpers() -> None:
    from advdefense.attacks.local_search import _cap_new_pixels, _in_pixel_budget

    changed = torch.tensor([[True, False, False, False], [True, True, False, False]])
    cand = torch.tensor([[False, True, True, True], [False, False, True, True]])
    # row 0 has room for 1 more pixel: all candidates stay; row 1 (k = 2) is full: only its
    # changed pixels may be probed (here none is a candidate, so all changed ones)
    assert _in_pixel_budget(cand, changed, 2).tolist() == [[False, True, True, True],
                                                           [True, True, False, False]]
    inf = float("inf")
    scores = torch.tensor([[inf, 0.5, 0.125, 0.25], [0.75, 0.375, inf, inf]])
    capped = _cap_new_pixels(scores, changed, 2)
    # row 0: one new pixel fits, the best-scoring (0.125) one; row 1: changed pixels only
    assert capped.tolist() == [[inf, inf, 0.125, inf], [0.75, 0.375, inf, inf]]


def test_k_and_eps_together_are_refused() -> None:
    from advdefense.checks import ConfigError

    with pytest.raises(ConfigError, match="attack.k"):
        LocalSearch(k=10, eps=0.3)
    with pytest.raises(ConfigError, match="attack.k"):
        LocalSearch(k=0)
