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


def classification_metrics(prefix: str) -> MetricCollection:
    """Accuracy, precision, recall and F1 for labels/predictions in {0, 1}, keys ``<prefix>acc``..."""
    return MetricCollection(
        {"acc": BinaryAccuracy(), "precision": BinaryPrecision(), "recall": BinaryRecall(),
         "f1": BinaryF1Score()},
        prefix=prefix,
    )


def confusion_matrix() -> BinaryConfusionMatrix:
    """2x2 counts, rows = true class (6, 7), columns = predicted class."""
    return BinaryConfusionMatrix()
