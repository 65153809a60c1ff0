"""SparsePGD (PGD_0): the L0 budget, the projection, direction limits and its strength."""

from __future__ import annotations

import pytest
import torch
from attack_models import tiny_cnn
from hypothesis import given, settings
from hypothesis import strategies as st

from advdefense.attacks import SparsePGD
from advdefense.attacks.sparse_pgd import project_l0


def _changed(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (out != x).flatten(1).sum(1)


def test_projection_is_the_closest_k_sparse_image_in_the_box() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 0.2, 0.9]).view(1, 1, 1, 5)
    adv = torch.tensor([0.7, 0.5, -3.0, 0.25, 1.4]).view(1, 1, 1, 5)
    # clipped changes: +0.7, 0, -1.0, +0.05, +0.1 -> keep the two largest magnitudes
    out = project_l0(x, adv, 2)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.7, 0.5, 0.0, 0.2, 0.9]))
    up = project_l0(x, adv, 2, "increase")  # the -1.0 change is not allowed
    torch.testing.assert_close(up.flatten(), torch.tensor([0.7, 0.5, 1.0, 0.2, 1.0]))
    down = project_l0(x, adv, 2, "decrease")
    torch.testing.assert_close(down.flatten(), torch.tensor([0.0, 0.5, 0.0, 0.2, 0.9]))
    # a brute-force check: no other 2-sparse box point is closer to adv
    clipped = adv.clamp(0, 1).flatten()
    best = min(
        float(((torch.where(torch.isin(torch.arange(5), torch.tensor([i, j])), clipped, x.flatten())
                - adv.flatten()) ** 2).sum())
        for i in range(5) for j in range(i + 1, 5))
    assert float(((out.flatten() - adv.flatten()) ** 2).sum()) == pytest.approx(best)


@settings(max_examples=12, deadline=None)
@given(k=st.integers(1, 60), direction=st.sampled_from(["both", "increase", "decrease"]),
       restarts=st.integers(1, 3), seed=st.integers(0, 2**16), n=st.integers(1, 3))
def test_outputs_stay_in_the_l0_budget_and_direction(k: int, direction: str, restarts: int,
                                                      seed: int, n: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x[x < 0.5] = 0.0
    y = torch.randint(0, 2, (n,), generator=g)
    out = SparsePGD(k=k, steps=3, restarts=restarts, direction=direction, seed=seed)(
        tiny_cnn(seed % 5), x, y)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (_changed(out, x) <= k).all()
    if direction == "increase":
        assert (out >= x).all()
    elif direction == "decrease":
        assert (out <= x).all()


def test_strength_grows_with_k_on_an_undefended_cnn(undefended_cnn, digits) -> None:
    x, y = digits[0][:64], digits[1][:64]
    rates = []
    for k in (4, 40, 784):
        res = SparsePGD(k=k, steps=20, alpha=[0.5, 1.0, 2.0], restarts=3,
                        early_stop=True).run(undefended_cnn, x, y)
        assert (_changed(res.images, x) <= k).all()
        with torch.no_grad():
            fooled = undefended_cnn(res.images).argmax(1) != y
        assert torch.equal(fooled, res.success)  # success is the model's verdict on the output
        rates.append(float(res.success.float().mean()))
    assert rates[0] < 0.2 and rates[1] >= 0.5 and rates[2] == 1.0
    assert rates == sorted(rates)


def test_alpha_list_cycles_over_restarts(undefended_cnn, digits) -> None:
    x, y = digits[0][:32], digits[1][:32]
    per = [SparsePGD(k=30, steps=10, alpha=a).run(undefended_cnn, x, y).success for a in (0.5, 2.0)]
    both = SparsePGD(k=30, steps=10, alpha=[0.5, 2.0], restarts=2).run(undefended_cnn, x, y)
    assert torch.equal(both.success, per[0] | per[1])


def test_more_restarts_never_weaken_and_restart_zero_is_fixed(undefended_cnn, digits) -> None:
    x, y = digits[0][:64], digits[1][:64]
    one = SparsePGD(k=8, steps=5, restarts=1).run(undefended_cnn, x, y)
    three = SparsePGD(k=8, steps=5, restarts=3).run(undefended_cnn, x, y)
    assert (three.success | ~one.success).all()
    assert three.success.sum() >= one.success.sum()
    again = SparsePGD(k=8, steps=5, restarts=1).run(undefended_cnn, x, y)
    assert torch.equal(one.images, again.images)


@settings(max_examples=8, deadline=None)
@given(k=st.sampled_from([1, 10, 20]), start=st.integers(0, 120), restarts=st.integers(1, 4))
def test_real_digits_stay_within_k_pixels(digits, k: int, start: int, restarts: int) -> None:
    x, y = digits[0][start:start + 4], digits[1][start:start + 4]
    attack = SparsePGD(k=k, steps=4, restarts=restarts, alpha=[0.5, 2.0], seed=start)
    out = attack(tiny_cnn(start % 5), x, y)
    assert (_changed(out, x) <= k).all()
    assert attack.threat_model.perturbation.k == k


# Results of SparsePGD on a fixed tiny CNN and fixed images, recorded from the implementation
# that had its own copy of PGD's loop (before it ran on PGDLoop's hooks): the loop must not
# change a single result.
PINNED = [
    (dict(k=5, steps=3, restarts=3, alpha=[0.2, 0.5], seed=1),
     [True, True, False, False, False, False, False, False], [12] * 8,
     [390.23676, 388.25375, 394.83823, 388.17438, 378.38638, 386.17053, 390.90167, 394.74185],
     [88, 178, 208, 544, 600], [0.30772, -0.41207, -0.39897, -0.50724, 0.3148]),
    (dict(k=5, steps=3, restarts=3, alpha=[0.2, 0.5], seed=1, early_stop=True),
     [True, True, False, False, False, False, False, False], [8, 3, 12, 12, 12, 12, 12, 12],
     [390.23676, 387.01135, 394.83823, 388.17438, 378.38638, 386.17053, 390.90167, 394.74185],
     [88, 178, 208, 544, 600], [0.30772, -0.41207, -0.39897, -0.50724, 0.3148]),
    (dict(k=3, steps=3, restarts=2, alpha=0.3, targeted=True, loss="margin",
          direction="increase", seed=2),
     [False, True, False, False, False, False, False, False], [8] * 8,
     [391.50146, 387.51599, 396.56528, 389.53122, 380.4472, 387.21475, 390.01065, 397.1474],
     [88, 202, 600], [0.21816, 0.16787, 0.18293]),
]


@pytest.mark.parametrize(("kw", "success", "queries", "sums", "changed", "deltas"), PINNED)
def test_results_pinned_on_a_fixed_model(kw, success, queries, sums, changed, deltas) -> None:
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model = tiny_cnn(0).eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    res = SparsePGD(**kw).run(model, x, y)
    assert res.success.tolist() == success and res.queries.tolist() == queries
    assert res.images.sum((1, 2, 3)).tolist() == pytest.approx(sums, abs=1e-3)
    delta = (res.images - x)[0].flatten()
    assert delta.nonzero().flatten().tolist() == changed
    assert delta[changed].tolist() == pytest.approx(deltas, abs=1e-4)
