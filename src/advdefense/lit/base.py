"""What every LightningModule here shares: metrics, eval steps, confusion counts, optimizers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from advdefense.defenses import TrainingDefense
from advdefense.lit.metrics import binary_metric_collection, confusion_matrix

VALIDATION_ATTACK_SEED = 0


class ClassifierModule(pl.LightningModule):
    """Base for modules whose ``self.model`` maps (N, 1, 28, 28) in [0, 1] to (N, 2) logits.

    Logs ``val/acc``, ``val/precision``, ``val/recall``, ``val/f1``, ``val/loss`` and the
    same under ``test/``, plus the test confusion counts ``test/cm_tn`` ... ``test/cm_tp``
    (positive class = digit 7). Subclasses set ``self.model`` (and ``self.defense``, the
    training defense) and write ``training_step``.

    Model selection: ``val/select_acc`` is what the best checkpoint maximises
    (``conf/callbacks/default.yaml``). For a module whose training defense attacks
    (``defense.validation_images`` is not None) it is ``val/adv_acc``, the accuracy on the
    validation images attacked by that defense against the whole model; otherwise ``val/acc``.
    Clean accuracy of an adversarially trained model reaches 1.0 within an epoch or two, and the
    first epoch that reached it would be kept forever. The attack runs with its own fixed random
    seed (every epoch sees the same random starts), inside a forked RNG, so the training's random
    stream is the same as without it.
    """

    model: nn.Module
    defense: TrainingDefense | None = None

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

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        """Log the stage's metrics; return the predictions (N,)."""
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
        return preds

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        correct = (self._eval_step(batch, "val") == labels).float()
        adv = self.attacked_validation_images(images, labels)
        if adv is not None:
            with torch.no_grad():
                correct = (self.model(adv).argmax(1) == labels).float()
            self.log("val/adv_acc", correct.mean(), on_step=False, on_epoch=True,
                     batch_size=len(labels), sync_dist=True)
        self.log("val/select_acc", correct.mean(), on_step=False, on_epoch=True,
                 batch_size=len(labels), sync_dist=True)

    def attacked_validation_images(self, images: torch.Tensor, labels: torch.Tensor
                                   ) -> torch.Tensor | None:
        """``self.defense``'s attack on a validation batch (None: it has none), crafted against
        ``self.model`` with gradients on (validation runs in inference mode) and a fixed seed."""
        if self.defense is None:
            return None
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.inference_mode(False), torch.enable_grad(), \
                torch.random.fork_rng(devices=devices):
            torch.manual_seed(VALIDATION_ATTACK_SEED)
            adv = self.defense.validation_images(self.model, images.clone(), labels.clone())
        return None if adv is None else adv.detach()

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
