"""Training-time defenses: how a training batch is turned into the batch the model learns from.

A defense is a strategy object with one method, ``defense(model, images, labels, step)``,
returning the (images, labels) to compute the training loss on. ``model`` is the whole
pipeline being trained (preprocessing included), so adversarial examples are crafted
through the preprocessing, exactly as an attacker who sees the deployed model would.
A new defense is one file here plus one config in ``conf/defense/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from advdefense.checks import ConfigError, check_range


class TrainingDefense:
    """Base class and the ``none`` defense (``conf/defense/none.yaml``): train on the clean batch."""

    name = "none"

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the training batch.

        Args:
            model: the pipeline being trained, (N, 1, 28, 28) in [0, 1] -> (N, 2) logits.
            images: (N, 1, 28, 28) float in [0, 1].
            labels: (N,) int64 in {0, 1}.
            step: the global training step (lets a defense refresh state every k steps).

        Returns:
            images (M, 1, 28, 28) in [0, 1] and labels (M,), M >= N.
        """
        return images, labels

    def validation_images(self, model: nn.Module, images: torch.Tensor,
                          labels: torch.Tensor) -> torch.Tensor | None:
        """The validation images as this defense's attack sees them, or None (no attack).

        Model selection (``val/select_acc``) scores a checkpoint on these: an adversarially
        trained model is kept for its accuracy under the attack it trains against, not for its
        clean accuracy, which saturates within an epoch or two. Stateless, no training state
        changes. (N, 1, 28, 28) in [0, 1] -> (N, 1, 28, 28) in [0, 1], one per input image.
        """
        return None


class AdversarialTraining(TrainingDefense):
    """Clean batch plus adversarial versions of a fraction of it (Goodfellow et al. 2014).

    The loss is the mean over the concatenation, so ``adv_fraction=1`` weighs clean and
    adversarial examples equally (the paper's clean + FGSM mixture), and ``keep_clean=False``
    with ``adv_fraction=1`` is Madry et al.'s purely adversarial training.

    Args:
        attack: any attack object, ``attack(model, images, labels) -> images``.
        adv_fraction: fraction of the batch (its first examples) that is attacked, in (0, 1].
        keep_clean: keep the clean images in the batch.
    """

    name = "adversarial"

    def __init__(self, attack, adv_fraction: float = 1.0, keep_clean: bool = True) -> None:
        check_range("defense.adv_fraction", adv_fraction, 0.0, 1.0, lo_open=True)
        self.attack, self.adv_fraction, self.keep_clean = attack, float(adv_fraction), keep_clean

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        k = max(1, round(self.adv_fraction * images.shape[0]))
        adv = self.attack(model, images[:k], labels[:k]).detach()
        if self.keep_clean:
            return torch.cat([images, adv]), torch.cat([labels, labels[:k]])
        return torch.cat([adv, images[k:]]), labels

    def validation_images(self, model: nn.Module, images: torch.Tensor,
                          labels: torch.Tensor) -> torch.Tensor | None:
        """Every validation image attacked (``adv_fraction`` and ``keep_clean`` shape training
        batches only)."""
        return self.attack(model, images, labels).detach()


class MixedDefense(TrainingDefense):
    """Split each batch between several defenses (e.g. half PGD, half spatial).

    Args:
        defenses: the parts, in batch order; each sees its own contiguous slice of the batch.
            A mapping (name -> defense, as a composed config gives them: ``defense.defenses.pgd``)
            or a list.
        weights: relative slice sizes (default equal); a mapping with the same names as
            ``defenses``, or a list in its order.
    """

    name = "mixed"

    def __init__(self, defenses: Mapping[str, TrainingDefense] | Sequence[TrainingDefense],
                 weights: Mapping[str, float] | Sequence[float] | None = None) -> None:
        if not defenses:
            raise ConfigError("defense.defenses", defenses, "at least one defense")
        if isinstance(defenses, Mapping):
            names = list(defenses)
            if isinstance(weights, Mapping):
                if set(weights) != set(names):
                    raise ConfigError("defense.weights", dict(weights),
                                      f"one weight for each of the defenses {names}")
                weights = [weights[k] for k in names]
            defenses = [defenses[k] for k in names]
        elif isinstance(weights, Mapping):
            raise ConfigError("defense.weights", dict(weights),
                              "a list when defense.defenses is a list")
        weights = list(weights) if weights is not None else [1.0] * len(defenses)
        if len(weights) != len(defenses) or any(w <= 0 for w in weights):
            raise ConfigError("defense.weights", weights, "one positive weight per defense")
        total = sum(weights)
        self.defenses, self.shares = list(defenses), [w / total for w in weights]

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for defense, start, stop in self._slices(images.shape[0]):
            if stop > start:
                x, y = defense(model, images[start:stop], labels[start:stop], step)
                xs.append(x)
                ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    def _slices(self, n: int) -> list[tuple[TrainingDefense, int, int]]:
        out, start = [], 0
        for i, (defense, share) in enumerate(zip(self.defenses, self.shares, strict=True)):
            stop = n if i == len(self.defenses) - 1 else start + round(share * n)
            out.append((defense, start, stop))
            start = stop
        return out

    def validation_images(self, model: nn.Module, images: torch.Tensor,
                          labels: torch.Tensor) -> torch.Tensor | None:
        """Each part attacks its slice (the training split); a part without an attack keeps its
        slice clean; None when no part attacks."""
        parts = [(d.validation_images(model, images[a:b], labels[a:b]) if b > a else None, a, b)
                 for d, a, b in self._slices(images.shape[0])]
        if all(x is None for x, _, _ in parts):
            return None
        return torch.cat([images[a:b] if x is None else x for x, a, b in parts])
