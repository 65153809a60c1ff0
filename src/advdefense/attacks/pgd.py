"""L-infinity Projected Gradient Descent with random restarts.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083.
"""

from __future__ import annotations

import torch
from torch import nn

from advdefense.attacks.base import (
    Attack,
    AttackResult,
    check_int,
    counts,
    example_loss,
    improves,
    input_grad,
    other_class,
)
from advdefense.checks import check_choice, check_range


class PGD(Attack):
    """Signed-gradient ascent projected onto the eps ball and [0, 1] after every step.

    Each restart starts at ``x + U(-eps, eps)`` (or at ``x`` without ``random_start``) and takes
    ``steps`` steps ``x <- proj(x + alpha * sign(grad loss))``. Per example the attack keeps the
    best point seen over all steps and restarts: a misclassified point first, among those (or
    if none) the one with the highest loss. The loss is therefore never lower than that of the
    last iterate, and more restarts never weaken it (restart ``r`` draws its start from its own
    generator seeded from the chunk's, so restart 0 is the same whatever ``restarts`` is).
    Targeted: descends the loss of the other class (``1 - y``) instead; "best" = lowest.

    Shape:
        images (N, 1, 28, 28) float in [0, 1]; labels (N,) int64; output same as images.

    Args:
        eps: L-infinity radius in pixel-intensity units, in [0, 1]; 0 returns the input.
        alpha: step size per iteration, same units, in (0, 1].
        steps: gradient steps per restart, >= 1.
        random_start: start uniformly in the eps ball (Madry et al.) instead of at x.
        restarts: independent restarts, >= 1.
        loss: ``"ce"`` cross-entropy or ``"margin"`` logit margin ``z_other - z_true``.
        targeted: attack toward the other class.
        batch_size, progress, seed: see :class:`~advdefense.attacks.base.Attack`.

    ``result.queries`` = restarts * (steps + 1) forward passes (steps with a backward).
    """

    name = "pgd"

    def __init__(self, eps: float = 0.3, alpha: float = 0.01, steps: int = 40,
                 random_start: bool = True, restarts: int = 1, loss: str = "ce",
                 targeted: bool = False, batch_size: int = 256, progress: bool = False,
                 seed: int = 0) -> None:
        super().__init__(batch_size, progress, seed)
        check_range("attack.eps", eps, 0.0, 1.0)
        check_range("attack.alpha", alpha, 0.0, 1.0, lo_open=True)
        self.steps = check_int("attack.steps", steps)
        self.restarts = check_int("attack.restarts", restarts)
        check_choice("attack.loss", loss, ["ce", "margin"])
        self.eps, self.alpha, self.loss = float(eps), float(alpha), loss
        self.random_start, self.targeted = bool(random_start), bool(targeted)

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator) -> AttackResult:
        n = len(images)
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=images.device))
        target = labels
        if self.targeted:
            with torch.no_grad():
                target = other_class(model(images), labels)
        best = images.clone()
        best_success = torch.zeros(n, dtype=torch.bool, device=images.device)
        best_score = torch.full((n,), float("-inf"), device=images.device)
        for restart in range(self.restarts):
            g = torch.Generator(device=images.device)
            g.manual_seed(base_seed + restart)
            self._restart(model, images, labels, target, g, (best, best_success, best_score))
        return AttackResult(best, best_success,
                            counts(n, self.restarts * (self.steps + 1), images))

    def _restart(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 target: torch.Tensor, generator: torch.Generator,
                 best: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        """One restart; updates ``best = (images, success, score)`` in place."""
        lo, hi = (images - self.eps).clamp(min=0.0), (images + self.eps).clamp(max=1.0)
        x = images.clone()
        if self.random_start and self.eps > 0:
            noise = torch.rand(images.shape, generator=generator, device=images.device,
                               dtype=images.dtype)
            x = torch.minimum(torch.maximum(x + (2 * noise - 1) * self.eps, lo), hi)
        sign = -1.0 if self.targeted else 1.0
        for _ in range(self.steps):
            grad, logits = input_grad(model, x, target, self.loss)
            self._keep(x, logits, labels, target, best)
            x = torch.minimum(torch.maximum(x + (sign * self.alpha) * grad.sign(), lo), hi)
        with torch.no_grad():
            self._keep(x, model(x), labels, target, best)

    def _keep(self, x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
              target: torch.Tensor, best: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        best_x, best_success, best_score = best
        pred = logits.argmax(1)
        success = pred == target if self.targeted else pred != labels
        score = example_loss(logits, target, self.loss)
        score = -score if self.targeted else score
        better = improves(success, score, best_success, best_score)
        best_x[better] = x[better]
        best_success |= better & success
        best_score[better] = score[better]
