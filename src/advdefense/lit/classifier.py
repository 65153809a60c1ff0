"""``DefendedClassifier``: one member = preprocessing + CNN, trained with a defense strategy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advdefense.defenses import TrainingDefense
from advdefense.lit.base import ClassifierModule
from advdefense.models import member_pipeline

__all__ = ["DefendedClassifier", "member_pipeline"]


class DefendedClassifier(ClassifierModule):
    """A member of the ensemble: ``nn.Sequential(preprocess, net)`` trained under ``defense``.

    Args:
        net: plain network, (N, 1, 28, 28) -> (N, 2) logits.
        preprocess: preprocessing module applied before the net, at training and test time.
        defense: training-step strategy (clean, FGSM, PGD, black box, spatial...); it crafts
            its examples against the whole pipeline, preprocessing included.
        optimizer: partial optimizer, called with ``params=``.
        scheduler: optional partial LR scheduler, called with ``optimizer=``.
    """

    def __init__(self, net: nn.Module, preprocess: nn.Module | None = None,
                 defense: TrainingDefense | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "preprocess", "defense", "optimizer", "scheduler"])
        self.model = member_pipeline(preprocess if preprocess is not None else nn.Identity(), net)
        self.defense = defense if defense is not None else TrainingDefense()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = self.defense(self.model, *batch, self.global_step)
        return self.fit_step(images, labels)
