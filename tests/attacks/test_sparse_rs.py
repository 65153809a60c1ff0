"""Sparse-RS: the L0 budget on every query, exact query counts, early exit, the schedule,
and its strength against the local search at the same budget."""

from __future__ import annotations

import pytest
import torch
from attack_models import NoBackward, tiny_cnn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advdefense.attacks import LocalSearch, SparseRS
from advdefense.attacks.base import example_loss, predict
from advdefense.attacks.sparse_rs import alpha_schedule
from advdefense.attacks.threat import L0, Queries, ThreatModel
from advdefense.checks import ConfigError


class Recorder(nn.Module):
    """Counts and keeps every image the attack queries."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.net(x)


def _l0_to_nearest(queried: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Per queried image, changed pixels to the closest original (L0), (Q,) int64."""
    q, o = queried.flatten(1), originals.flatten(1)
    return torch.stack([(q != row).sum(1) for row in o]).amin(0)


def test_schedule_halves_at_the_papers_iterations() -> None:
    assert alpha_schedule(0, 0.3, 10_000) == 0.3
    assert alpha_schedule(10, 0.3, 10_000) == 0.3
    assert alpha_schedule(11, 0.3, 10_000) == 0.15
    assert alpha_schedule(50, 0.3, 10_000) == 0.15
    assert alpha_schedule(51, 0.3, 10_000) == 0.075
    assert alpha_schedule(9_999, 0.8, 10_000) == 0.8 / 512
    # another budget is rescaled: iteration 30 of 1,000 = iteration 300 of 10,000 (p / 8)
    assert alpha_schedule(30, 0.4, 1_000) == 0.05


@settings(max_examples=10, deadline=None)
@given(k=st.integers(1, 40), queries=st.integers(2, 60), seed=st.integers(0, 2**16),
       n=st.integers(1, 4))
def test_every_query_within_k_pixels_and_counted_exactly(digits, k: int, queries: int,
                                                         seed: int, n: int) -> None:
    x, y = digits[0][seed % 100:seed % 100 + n], digits[1][seed % 100:seed % 100 + n]
    model = Recorder(tiny_cnn(seed % 5))
    res = SparseRS(k=k, max_queries=queries, seed=seed, eval_batch=3).run(model, x, y)
    changed = (res.images != x).flatten(1)
    assert (changed.sum(1) <= k).all() and torch.equal(res.info["pixels"], changed.sum(1))
    assert ((res.images == 0) | (res.images == 1) | ~changed.view_as(x)).all()  # values 0 / 1
    seen = torch.cat(model.seen)
    assert (_l0_to_nearest(seen, x) <= k).all()
    assert int(res.queries.sum()) == seen.shape[0]  # every forward image is one counted query
    assert (res.queries <= queries).all() and (res.queries >= 1).all()
    assert torch.equal(res.success, predict(model.net, res.images) != y)


def test_early_exit_and_misclassified_inputs_left_alone(undefended_cnn, digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    wrong = 1 - y  # every input is "misclassified" under the flipped labels
    res = SparseRS(k=20, max_queries=50).run(undefended_cnn, x, wrong)
    clean_ok = predict(undefended_cnn, x) == y
    assert torch.equal(res.queries[clean_ok], torch.ones(int(clean_ok.sum()), dtype=torch.long))
    assert torch.equal(res.images[clean_ok], x[clean_ok])
    res = SparseRS(k=20, max_queries=300).run(undefended_cnn, x, y)
    # early exit: a fooled image stops at its fooling query (the last one at the latest)
    assert res.success.any() and (res.queries[res.success] <= 300).all()
    assert (res.queries[res.success] < 300).any()
    assert (res.queries[~res.success] == 300).all()  # the budget is spent where it failed


def test_a_move_is_kept_only_if_the_margin_drops(undefended_cnn, digits) -> None:
    x, y = digits[0][:12], digits[1][:12]

    def margin(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return -example_loss(undefended_cnn(images), y, "margin")

    start = SparseRS(k=10, max_queries=2, seed=3)(undefended_cnn, x, y)  # the random start
    searched = SparseRS(k=10, max_queries=300, seed=3)(undefended_cnn, x, y)
    assert (margin(searched) <= margin(start) + 1e-5).all()
    assert (margin(searched) < margin(start) - 1e-3).any()


def test_query_only_seeded_and_declares_its_threat_model(undefended_cnn, digits) -> None:
    x, y = digits[0][:6], digits[1][:6]
    attack = SparseRS(k=12, max_queries=100, seed=1)
    out = attack(NoBackward(undefended_cnn), x, y)
    assert torch.equal(out, attack(undefended_cnn, x, y))
    assert attack.threat_model == ThreatModel(L0(12), Queries(100))


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=785), dict(k=2.5), dict(max_queries=1),
                                    dict(p_init=0.0), dict(p_init=1.5), dict(eval_batch=0)])
def test_bad_parameters_name_the_key(kwargs) -> None:
    with pytest.raises(ConfigError) as info:
        SparseRS(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


@pytest.mark.slow
def test_fools_at_least_as_many_digits_as_the_local_search(undefended_cnn, digits) -> None:
    """Same k, same query budget, an undefended member: Sparse-RS >= the local search."""
    x, y = digits[0][:32], digits[1][:32]
    rs = SparseRS(k=20, max_queries=1000).run(undefended_cnn, x, y)
    ls = LocalSearch(k=20, max_queries=1000, eval_batch=1024).run(undefended_cnn, x, y)
    assert (rs.queries <= 1000).all() and (ls.queries <= 1000).all()
    assert int(rs.success.sum()) >= int(ls.success.sum()) > 0
