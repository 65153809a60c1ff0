"""What every LightningModule here shares: metrics, eval steps, confusion counts, optimizers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from advdefense.lit.metrics import binary_metric_collection, confusion_matrix


class ClassifierModule(pl.LightningModule):
    """Base for modules whose ``self.model`` maps (N, 1, 28, 28) in [0, 1] to (N, 2) logits.

    Logs ``val/acc``, ``val/precision``, ``val/recall``, ``val/f1``, ``val/loss`` and the
    same under ``test/``, plus the test confusion counts ``test/cm_tn`` ... ``test/cm_tp``
    (positive class = digit 7). Subclasses set ``self.model`` and write ``training_step``.
    """

    model: nn.Module

    def __init__(self, optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_metrics = binary_metric_collection("val/")
        self.test_metrics = binary_metric_collection("test/")
        self.test_confusion = confusion_matrix()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, 2) logits, preprocessing included."""
        return self.model(images)

    def fit_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``self.model`` on a (possibly augmented) training batch, logged."""
        logits = self.model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        # Training-batch accuracy (clean + adversarial examples) as a plain mean: a full
        # MetricCollection update per step costs ~10% of a small clean step on a CPU.
        acc = (logits.detach().argmax(1) == labels).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, on_step=False,
                      on_epoch=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        images, labels = batch
        logits = self.model(images)
        preds = logits.argmax(1)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(preds, labels)
        self.log(f"{stage}/loss", nn.functional.cross_entropy(logits, labels), on_epoch=True,
                 sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        if stage == "test":
            self.test_confusion.update(preds, labels)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        cm = self.test_confusion.compute()
        for (i, j), name in zip([(0, 0), (0, 1), (1, 0), (1, 1)], ["tn", "fp", "fn", "tp"], strict=True):
            self.log(f"test/cm_{name}", cm[i, j].float())
        self.test_confusion.reset()

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = (self.optimizer_factory(params=params) if self.optimizer_factory is not None
                     else torch.optim.Adam(params, lr=1e-3))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
