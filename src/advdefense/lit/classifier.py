"""``DefendedClassifier``: one member = preprocessing + CNN, trained with a defense strategy."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from advdefense.defenses import NoDefense, TrainingDefense
from advdefense.lit.metrics import classification_metrics, confusion_matrix


def member_pipeline(preprocess: nn.Module, net: nn.Module) -> nn.Sequential:
    """The deployed member: (N, 1, 28, 28) in [0, 1] -> preprocess -> net -> (N, 2) logits."""
    return nn.Sequential(OrderedDict(preprocess=preprocess, net=net))


class DefendedClassifier(pl.LightningModule):
    """A member of the ensemble: ``nn.Sequential(preprocess, net)`` trained under ``defense``.

    Args:
        net: plain network, (N, 1, 28, 28) -> (N, 2) logits.
        preprocess: preprocessing module applied before the net, at training and test time.
        defense: training-step strategy (clean, FGSM, PGD, black box, spatial...).
        optimizer: partial optimizer, called with the parameters.
        scheduler: optional partial LR scheduler, called with the optimizer.
    """

    def __init__(self, net: nn.Module, preprocess: nn.Module | None = None,
                 defense: TrainingDefense | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "preprocess", "defense", "optimizer", "scheduler"])
        self.model = member_pipeline(preprocess if preprocess is not None else nn.Identity(), net)
        self.defense = defense if defense is not None else NoDefense()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.train_metrics = classification_metrics("train/")
        self.val_metrics = classification_metrics("val/")
        self.test_metrics = classification_metrics("test/")
        self.test_confusion = confusion_matrix()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, 2) logits, preprocessing included."""
        return self.model(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        x, y = self.defense(self.model, images, labels, self.global_step)
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.train_metrics.update(logits.argmax(1), y)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        images, labels = batch
        logits = self.model(images)
        preds = logits.argmax(1)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(preds, labels)
        self.log(f"{stage}/loss", nn.functional.cross_entropy(logits, labels), on_epoch=True)
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
        if self.optimizer_factory is None:
            return torch.optim.Adam(self.parameters(), lr=1e-3)
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
