"""The one stratified, nested sampler (advdefense.sampling).

The pinned index lists were computed by the three samplers it replaced (``data.stratified_split``,
``evaluation.grid.nested_order``, ``evaluation.pipeline.subsample``) before they were deleted:
the validation split, the evaluated subsets and the budgeted attacks' order must not change.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advdefense.sampling import stratified_sample

LAB = np.array([0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0])  # 12 zeros, 8 ones
BAL = np.array([0, 1] * 5)  # equal classes: keys tie


@pytest.mark.parametrize(("labels", "n", "seed", "expected"), [
    (LAB, 7, 3, [0, 4, 11, 14, 15, 18, 19]),  # stratified_split(LAB, 7, 3)
    (LAB, 9, (4, 1), [0, 2, 7, 11, 12, 14, 16, 17, 18]),  # the data module's (seed, i) seeds
    (BAL, 5, 0, [3, 4, 6, 8, 9]),  # a tie: class 0 gets the odd item (largest remainder)
    (BAL, 3, 2, [4, 5, 8]),
])
def test_subset_pins_the_old_stratified_split(labels, n, seed, expected) -> None:
    taken = stratified_sample(labels, n, seed)
    assert isinstance(taken, np.ndarray) and taken.dtype == np.int64
    assert taken.tolist() == expected


def test_subset_pins_the_old_subsample() -> None:
    labels = torch.from_numpy(LAB)
    taken = stratified_sample(labels, 6, 5)
    assert isinstance(taken, torch.Tensor) and taken.dtype == torch.int64
    assert taken.tolist() == [3, 5, 6, 14, 16, 19]
    assert torch.equal(stratified_sample(labels, None, 0), torch.arange(20))
    assert torch.equal(stratified_sample(labels, 25, 0), torch.arange(20))  # n > N: all


@pytest.mark.parametrize(("labels", "seed", "first", "expected"), [
    (LAB, 3, 4, [0, 1, 2, 3, 4, 14, 16, 17, 9, 8, 7, 11, 13, 19, 5, 12, 15, 18, 10, 6]),
    (LAB, 0, 0, [6, 2, 7, 0, 11, 4, 18, 15, 13, 8, 19, 9, 1, 17, 10, 5, 14, 3, 16, 12]),
    (BAL, 1, 0, [0, 7, 5, 8, 4, 9, 3, 6, 1, 2]),  # ties broken by position
])
def test_nested_order_pins_the_old_grid_order(labels, seed, first, expected) -> None:
    order = stratified_sample(torch.from_numpy(labels), seed=seed, nested=True, first=first,
                              rng="torch", ties="position")
    assert order.tolist() == expected


def test_prefixes_are_nested_and_stratified() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=300) < 0.3).astype(np.int64)
    order = stratified_sample(labels, seed=7, nested=True)
    share = labels.mean()
    for k in range(1, 301):
        prefix = stratified_sample(labels, k, 7)
        np.testing.assert_array_equal(prefix, np.sort(order[:k]))  # the subset is the prefix
        assert abs(labels[prefix].sum() - k * share) <= 1.0


def test_proportions_and_determinism() -> None:
    labels = np.array([0] * 70 + [1] * 30)
    taken = stratified_sample(labels, 10, 3)
    assert (np.bincount(labels[taken]) == [7, 3]).all()
    np.testing.assert_array_equal(taken, stratified_sample(labels, 10, 3))
    assert not np.array_equal(taken, stratified_sample(labels, 10, 4))
    assert len(stratified_sample(labels, 0, 0)) == 0


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cannot take"):
        stratified_sample(LAB, -1)
    with pytest.raises(ValueError, match="rng must be one of"):
        stratified_sample(LAB, 3, rng="random")
