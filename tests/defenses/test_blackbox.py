"""Black-box-augmented training never differentiates the model inside its attack."""

from __future__ import annotations

import torch
from attack_models import NoBackward

from advdefense.attacks.local_search import LocalSearch
from advdefense.defenses import BlackBoxAugmentation


def test_defense_only_queries_and_fills_its_pool(undefended_cnn, mnist67_test):
    x, y = mnist67_test[0][:16], mnist67_test[1][:16]
    defense = BlackBoxAugmentation(LocalSearch(rounds=5, max_queries=300), attack_per_step=4,
                                   pool_size=8, pool_per_step=4)
    model = NoBackward(undefended_cnn)
    out_x, out_y = defense(model, x, y, step=0)
    assert out_x.shape == (20, 1, 28, 28) and torch.equal(out_y[:16], y)
    assert defense.filled == 4
    for step in range(1, 4):
        defense(model, x, y, step)
    assert defense.filled == 8  # the ring buffer wraps instead of growing
    assert out_x.min() >= 0 and out_x.max() <= 1


def test_attack_every_k_steps(undefended_cnn, mnist67_test):
    x, y = mnist67_test[0][:8], mnist67_test[1][:8]
    defense = BlackBoxAugmentation(LocalSearch(rounds=2, max_queries=100), attack_per_step=2,
                                   attack_every=3, pool_per_step=2)
    for step in range(6):
        defense(undefended_cnn, x, y, step)
    assert defense.filled == 4  # steps 0 and 3
