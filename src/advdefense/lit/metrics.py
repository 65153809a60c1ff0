"""torchmetrics collections shared by the LightningModules (positive class = digit 7)."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryConfusionMatrix,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)


def binary_metric_collection(prefix: str) -> MetricCollection:
    """torchmetrics collection of accuracy, precision, recall and F1 for labels/predictions in
    {0, 1} (updated batch by batch during training), keys ``<prefix>acc``..."""
    return MetricCollection(
        {"acc": BinaryAccuracy(), "precision": BinaryPrecision(), "recall": BinaryRecall(),
         "f1": BinaryF1Score()},
        prefix=prefix,
    )


def confusion_matrix() -> BinaryConfusionMatrix:
    """2x2 counts, rows = true class (6, 7), columns = predicted class."""
    return BinaryConfusionMatrix()
