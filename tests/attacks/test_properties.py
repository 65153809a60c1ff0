"""Property-based tests (hypothesis) of JSMA, spatial and local search on tiny random models.

For any parameters and inputs: outputs have the input's shape, lie in [0, 1], contain no NaN
and stay inside the attack's budget (JSMA: L0; spatial: exactly a warp of the input within
the angle / shift limits; local search: queries within max_queries).
"""

from __future__ import annotations

import torch
from attack_models import tiny_cnn
from hypothesis import given, settings
from hypothesis import strategies as st

from advdefense.attacks import JSMA, LocalSearch, SpatialGrid


def _inputs(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x[x < 0.4] = 0.0  # digit-like: many exact zeros, some exact ones
    x[x > 0.9] = 1.0
    return x, torch.randint(0, 2, (n,), generator=g)


def _valid(out: torch.Tensor, x: torch.Tensor) -> None:
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.isnan(out).any()
    assert out.min() >= 0 and out.max() <= 1


@settings(max_examples=12, deadline=None)
@given(gamma=st.floats(0.005, 0.05), theta=st.sampled_from([1.0, 0.5, -1.0]),
       seed=st.integers(0, 2**16), n=st.integers(1, 3))
def test_jsma_stays_in_its_l0_budget(gamma: float, theta: float, seed: int, n: int) -> None:
    x, y = _inputs(seed, n)
    out = JSMA(theta=theta, gamma=gamma)(tiny_cnn(seed % 5), x, y)
    _valid(out, x)
    changed = (out != x).flatten(1).sum(1)
    assert (changed <= 2 * int(gamma * 784 / 2)).all()  # one pixel pair per iteration


@settings(max_examples=12, deadline=None)
@given(max_angle=st.floats(0.0, 40.0), max_shift=st.floats(0.0, 4.0),
       n_angles=st.integers(1, 4), n_shifts=st.integers(1, 3),
       mode=st.sampled_from(["grid", "random"]), seed=st.integers(0, 2**16),
       n=st.integers(1, 3))
def test_spatial_output_is_a_warp_within_limits(max_angle: float, max_shift: float,
                                                n_angles: int, n_shifts: int, mode: str,
                                                seed: int, n: int) -> None:
    x, y = _inputs(seed, n)
    attack = SpatialGrid(preset=None, max_angle=max_angle, max_shift=max_shift,
                         n_angles=n_angles, n_shifts=n_shifts, mode=mode, k=4, seed=seed)
    res = attack.run(tiny_cnn(seed % 5), x, y)
    _valid(res.images, x)
    angle, dx, dy = res.info["angle"], res.info["dx"], res.info["dy"]
    assert (angle.abs() <= max_angle + 1e-4).all()
    assert (dx.abs() <= max_shift + 1e-4).all() and (dy.abs() <= max_shift + 1e-4).all()
    torch.testing.assert_close(res.images, attack.transform(x, angle, dx, dy))


@settings(max_examples=10, deadline=None)
@given(max_queries=st.integers(2, 300), rounds=st.integers(1, 4), p=st.floats(0.1, 1.0),
       update=st.sampled_from(["probe", "cyclic"]), seed=st.integers(0, 2**16),
       n=st.integers(1, 3))
def test_local_search_never_exceeds_its_query_budget(max_queries: int, rounds: int, p: float,
                                                      update: str, seed: int, n: int) -> None:
    x, y = _inputs(seed, n)
    attack = LocalSearch(p=p, rounds=rounds, max_queries=max_queries, update=update, seed=seed)
    res = attack.run(tiny_cnn(seed % 5), x, y)
    _valid(res.images, x)
    assert res.queries.shape == (n,)
    assert (res.queries <= max_queries).all(), res.queries
