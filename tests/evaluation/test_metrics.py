"""Metric values against hand-computed confusion matrices."""

import math

import pytest
import torch

from advdefense.evaluation.metrics import (
    accuracy_at_coverage,
    confusion,
    metrics_with_intervals,
    wilson,
)


def test_confusion_and_ratios_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    preds = torch.tensor([0, 1, 0, 1, 1, 0, 1, 1])  # TN=2 FP=1 FN=1 TP=4
    assert confusion(labels, preds) == [[2, 1], [1, 4]]
    m = metrics_with_intervals(labels, preds, torch.arange(8.0))
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(0.8)
    # Wilson 95% for 6/8, computed by hand from the closed form
    assert (m["accuracy_lo"], m["accuracy_hi"]) == pytest.approx((0.4093, 0.9285), abs=1e-4)


def test_wilson_edges():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)


def test_accuracy_at_80_drops_least_confident():
    # 10 examples; the two least confident are the two mistakes -> 8/8 at 80% coverage
    correct = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    conf = torch.tensor([9.0, 8, 0.1, 7, 6, 5, 0.2, 4, 3, 2])
    acc, k, kept = accuracy_at_coverage(correct, conf, 0.8)
    assert (acc, k, kept) == (1.0, 8, 8)
    # confident mistakes stay in
    acc, k, kept = accuracy_at_coverage(correct, -conf, 0.8)
    assert kept == 8 and k == 6


def test_no_positive_predictions():
    labels = torch.tensor([0, 1, 1])
    preds = torch.tensor([0, 0, 0])
    m = metrics_with_intervals(labels, preds, torch.zeros(3))
    assert math.isnan(m["precision"]) and (m["precision_lo"], m["precision_hi"]) == (0.0, 1.0)
    assert m["recall"] == 0.0 and m["f1"] == 0.0
