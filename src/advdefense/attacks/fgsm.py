"""Fast Gradient Sign Method.

Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
https://arxiv.org/abs/1412.6572.
"""

from __future__ import annotations

import torch
from torch import nn

from advdefense.attacks.base import Attack, AttackResult, counts, input_grad, other_class, predict
from advdefense.attacks.threat import Gradient, Linf, ThreatModel
from advdefense.checks import check_range


class FGSM(Attack):
    """One signed-gradient step of size ``eps`` in the L-infinity ball, clipped to [0, 1].

    ``x_adv = clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)``; targeted:
    ``x_adv = clip(x - eps * sign(grad_x CE(f(x), t)), 0, 1)`` with ``t`` the other class
    (``1 - y`` for two classes).

    Shape:
        images (N, 1, 28, 28) float in [0, 1]; labels (N,) int64; output same as images.

    Args:
        eps: L-infinity step size in pixel-intensity units, in [0, 1] (0.3 = 30% of the range).
        targeted: step toward the other class instead of away from the true one.
        batch_size, progress: see :class:`~advdefense.attacks.base.Attack` (no ``seed``: the
            attack draws no random numbers).

    ``result.queries`` is 1 gradient query per example; ``success`` = misclassified (None
    with ``run(..., need_success=False)``, which saves one forward pass per chunk).
    """

    name = "fgsm"

    def __init__(self, eps: float = 0.3, targeted: bool = False, batch_size: int = 256,
                 progress: bool = False) -> None:
        super().__init__(batch_size, progress)
        check_range("attack.eps", eps, 0.0, 1.0)
        self.eps, self.targeted = float(eps), bool(targeted)

    @property
    def threat_model(self) -> ThreatModel:
        """L-infinity ball of radius ``eps``, gradient access."""
        return ThreatModel(Linf(self.eps), Gradient())

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator, need_success: bool = True) -> AttackResult:
        if self.targeted:
            with torch.no_grad():
                target = other_class(model(images), labels)
            grad, _ = input_grad(model, images, target)
            step = -grad.sign()
        else:
            grad, _ = input_grad(model, images, labels)
            step = grad.sign()
        adv = (images + self.eps * step).clamp_(0.0, 1.0)
        # one forward + backward per chunk; the check of the result costs a second forward
        success = predict(model, adv) != labels if need_success else None
        return AttackResult(adv, success, counts(len(images), 1, images))
