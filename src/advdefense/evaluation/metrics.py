"""Classification metrics with 95% Wilson confidence intervals.

Conventions (one place for all of them):

* labels and predictions are int64 in {0, 1}: 0 = digit 6, 1 = digit 7; the *positive*
  class for precision, recall and F1 is digit 7 (label 1).
* the confusion matrix is ``[[TN, FP], [FN, TP]]``: rows = true class (6, 7), columns =
  predicted class (6, 7).
* confidence = the **max logit** of the model's output, as the UAE warm-up kit did. It is
  scale-dependent (unlike max softmax probability it is not bounded), but it is what the
  paper's coverage numbers used; the ranking it induces is all that accuracy@coverage needs.
* accuracy at 80% coverage: keep the ``ceil(0.8 * n)`` most confident examples (ties broken
  by index, deterministically), abstain on the rest, report accuracy on those kept.
* every proportion (accuracy, precision, recall, accuracy@80) has a Wilson score interval;
  F1 is not a proportion of counts and gets none. An undefined ratio (0 / 0) is NaN with the
  interval (0, 1).
"""

from __future__ import annotations

import math
from typing import Any

import torch

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials; (0, 1) when ``n == 0``."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def confusion(labels: torch.Tensor, preds: torch.Tensor) -> list[list[int]]:
    """2x2 confusion matrix ``[[TN, FP], [FN, TP]]`` from (N,) labels and predictions."""
    labels, preds = labels.long().flatten(), preds.long().flatten()
    cm = torch.bincount(labels * 2 + preds, minlength=4).reshape(2, 2)
    return [[int(v) for v in row] for row in cm]


def _ratio(k: int, n: int) -> float:
    return k / n if n else float("nan")


def accuracy_at_coverage(correct: torch.Tensor, confidence: torch.Tensor,
                         coverage: float = 0.8) -> tuple[float, int, int]:
    """Accuracy on the ``ceil(coverage * N)`` most confident examples.

    Args:
        correct: (N,) bool, prediction == label.
        confidence: (N,) float, higher = more confident (the max logit here).
        coverage: fraction of examples answered, in (0, 1].

    Returns:
        (accuracy, correct kept, kept count).
    """
    n = int(correct.numel())
    keep = math.ceil(coverage * n - 1e-9)
    if keep == 0:
        return float("nan"), 0, 0
    # stable sort on -confidence: ties keep index order, so the result is deterministic
    order = torch.sort(-confidence.double().flatten(), stable=True).indices[:keep]
    k = int(correct.flatten()[order].sum())
    return k / keep, k, keep


def metrics_with_intervals(labels: torch.Tensor, preds: torch.Tensor,
                           confidence: torch.Tensor, coverage: float = 0.8) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 (positive = 7), confusion matrix and accuracy@80, the
    ratios with their Wilson 95% intervals (``_lo`` / ``_hi``): one evaluation row's metrics.

    Args:
        labels: (N,) int64 in {0, 1}.
        preds: (N,) int64 in {0, 1}.
        confidence: (N,) float confidence of each prediction (max logit).

    Returns:
        a flat dict: ``n``, ``accuracy``, ``accuracy_lo``, ``accuracy_hi``, same for
        ``precision``, ``recall`` and ``accuracy_at_80``, ``f1`` and ``confusion``.
    """
    (tn, fp), (fn, tp) = cm = confusion(labels, preds)
    n = tn + fp + fn + tp
    out: dict[str, Any] = {"n": n}
    for name, k, m in (("accuracy", tn + tp, n), ("precision", tp, tp + fp), ("recall", tp, tp + fn)):
        out[name] = _ratio(k, m)
        out[f"{name}_lo"], out[f"{name}_hi"] = wilson(k, m)
    p, r = out["precision"], out["recall"]
    if tp == 0:
        out["f1"] = 0.0 if (fp + fn) else float("nan")
    else:
        out["f1"] = 2 * p * r / (p + r)
    acc80, k80, n80 = accuracy_at_coverage(labels == preds, confidence, coverage)
    out["accuracy_at_80"] = acc80
    out["accuracy_at_80_lo"], out["accuracy_at_80_hi"] = wilson(k80, n80)
    out["confusion"] = cm
    return out
