"""L-infinity Projected Gradient Descent with random restarts.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083.
"""

from __future__ import annotations

import torch
from torch import nn

from advdefense.attacks.base import (
    SELECT,
    Attack,
    AttackResult,
    channels_last,
    check_int,
    example_loss,
    improves,
    input_grad,
    linf_start,
    other_class,
    selection_score,
)
from advdefense.attacks.threat import Gradient, Linf, ThreatModel
from advdefense.checks import check_choice, check_range


class PGDLoop(Attack):
    """PGD's loop, shared by the attacks built on it (:class:`PGD`, sparse PGD).

    Restarts x steps of gradient ascent on the loss (descent of the target's loss if
    targeted) with PGD's best-point bookkeeping, early stop and ``select`` (see :class:`PGD`).
    A subclass says where a restart starts and what one step is, through two hooks:

    * :meth:`_start` ``(images, idx, generator, restart) -> (x, bounds)``: the start of
      restart ``restart`` on ``images[idx]`` and a tuple of (len(idx), ...) tensors the step
      needs (PGD: the eps box; sparse PGD: the clean images);
    * :meth:`_step` ``(x, grad, sign, bounds, restart) -> x``: one projected update of ``x``
      along ``sign * grad`` (``sign`` = -1 when targeted).

    When early stop drops examples, the loop drops their rows of ``bounds`` too.
    """

    name = "pgd_loop"

    def __init__(self, steps: int = 40, random_start: bool = True, restarts: int = 1,
                 loss: str = "ce", targeted: bool = False, early_stop: bool = False,
                 select: str = "loss", batch_size: int = 256, progress: bool = False,
                 seed: int = 0) -> None:
        super().__init__(batch_size, progress, seed)
        self.steps = check_int("attack.steps", steps)
        self.restarts = check_int("attack.restarts", restarts)
        check_choice("attack.loss", loss, ["ce", "margin"])
        self.loss = loss
        self.random_start, self.targeted = bool(random_start), bool(targeted)
        self.early_stop = bool(early_stop)
        check_choice("attack.select", select, list(SELECT))
        self.select = select

    def _start(self, images: torch.Tensor, idx: torch.Tensor, generator: torch.Generator,
               restart: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _step(self, x: torch.Tensor, grad: torch.Tensor, sign: float,
              bounds: tuple[torch.Tensor, ...], restart: int) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def _input_only(self) -> bool:
        """True when the only allowed point is the input itself (then one forward pass)."""
        return False

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator, need_success: bool = True) -> AttackResult:
        n = len(images)
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=images.device))
        target = labels
        if self.targeted:
            with torch.no_grad():
                target = other_class(model(images), labels)
        best = images.clone()
        best_success = torch.zeros(n, dtype=torch.bool, device=images.device)
        best_score = torch.full((n,), float("-inf"), device=images.device)
        queries = torch.zeros(n, dtype=torch.int64, device=images.device)
        state = (best, best_success, best_score, queries)
        if self.early_stop and self._input_only():
            # the eps ball is the input itself: every step and restart would return it
            with torch.no_grad():
                self._keep(images, model(images), labels, target, state,
                           torch.arange(n, device=images.device))
            return AttackResult(best, best_success, queries)
        for restart in range(self.restarts):
            g = torch.Generator(device=images.device)
            g.manual_seed(base_seed + restart)
            idx = torch.arange(n, device=images.device)
            if self.early_stop or (self.select == "confidence" and restart > 0):
                idx = idx[~best_success]
                if idx.numel() == 0:
                    break
            self._restart(model, images, labels, target, g, state, idx, restart)
        return AttackResult(best, best_success, queries)

    def _restart(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 target: torch.Tensor, generator: torch.Generator,
                 state: tuple[torch.Tensor, ...], idx: torch.Tensor, restart: int = 0) -> None:
        """One restart (number ``restart``) on the examples ``idx``; updates ``state`` (best
        images, success, score, queries) in place. The random start is drawn for the whole
        chunk, so an example's start does not depend on which others are still active."""
        x, bounds = self._start(images, idx, generator, restart)
        sign = -1.0 if self.targeted else 1.0
        success = state[1]
        for _ in range(self.steps):
            grad, logits = input_grad(model, x, target[idx], self.loss)
            self._keep(x, logits, labels, target, state, idx)
            if self.early_stop:
                active = ~success[idx]
                if not bool(active.all()):
                    if not bool(active.any()):
                        return
                    x, grad, idx = x[active], grad[active], idx[active]
                    bounds = tuple(b[active] for b in bounds)
            x = self._step(x, grad, sign, bounds, restart)
        with torch.no_grad():
            self._keep(x, model(channels_last(x)), labels, target, state, idx)

    def _keep(self, x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
              target: torch.Tensor, state: tuple[torch.Tensor, ...], idx: torch.Tensor) -> None:
        """Count one query for examples ``idx`` (rows of ``x``) and keep better points."""
        best_x, best_success, best_score, queries = state
        queries[idx] += 1
        pred = logits.argmax(1)
        success = pred == target[idx] if self.targeted else pred != labels[idx]
        score = example_loss(logits, target[idx], self.loss)
        score = -score if self.targeted else score
        score = selection_score(self.select, success, score, logits)
        better = improves(success, score, best_success[idx], best_score[idx])
        rows = idx[better]
        best_x[rows] = x[better]
        best_success[rows] |= success[better]
        best_score[rows] = score[better]


class PGD(PGDLoop):
    """Signed-gradient ascent projected onto the eps ball and [0, 1] after every step.

    Each restart starts at ``x + U(-eps, eps)`` (or at ``x`` without ``random_start``) and takes
    ``steps`` steps ``x <- proj(x + alpha * sign(grad loss))``. Per example the attack keeps the
    best point seen over all steps and restarts: a misclassified point first, among those (or
    if none) the one with the highest loss. The loss is therefore never lower than that of the
    last iterate, and more restarts never weaken it (restart ``r`` draws its start from its own
    generator seeded from the chunk's, so restart 0 is the same whatever ``restarts`` is).
    Targeted: descends the loss of the other class (``1 - y``) instead; "best" = lowest.

    Early stop (``early_stop=True``, the evaluation setting): once an example's kept point is
    misclassified (reaches the target, if targeted), it leaves the batch: later steps and
    restarts run only on the others. Whether an example is fooled is then exactly what it is
    without early stop (the other examples follow the same trajectories, the same random starts
    are drawn), but a fooled example keeps its *first* fooling iterate instead of the
    highest-loss one, and fooled examples cost no further queries. Accuracy is unchanged;
    only the returned images of fooled examples (and ``queries``) differ. ``eps = 0`` then
    costs one forward pass (no point other than the input exists). ``early_stop=False`` keeps
    the max-loss point of every example (what adversarial training wants).

    Which fooling point is kept (``select``): ``"loss"`` (default) the highest-loss one;
    ``"confidence"`` the *most confident wrong answer*, the fooling point whose largest logit
    (the confidence of :mod:`advdefense.evaluation.metrics`, the UAE warm-up kit's) is highest.
    Examples never fooled keep their highest-loss point either way. With ``early_stop=False``
    and ``select="confidence"`` (the evaluation setting) the attack keeps stepping after the
    first success, on the same trajectories, so the set of fooled examples is exactly that of
    early stop, while each fooled example's confidence is at least that of its first fooling
    point: accuracy at 80% coverage can only go down, accuracy is unchanged. (Early stop keeps
    the first fooling point, which lies just over the decision boundary and has a low
    confidence, so an abstaining metric drops exactly those images.) Restarts search for a
    success: with ``select="confidence"`` an example fooled by one restart takes no further
    restarts (the restart that fooled it runs to its last step), as with early stop. With one
    restart (the grid's PGD) the candidates are those of ``select="loss"``, so the confidence is
    also at least that of the highest-loss point.

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
        early_stop: stop attacking an example once it is misclassified (see above).
        select: ``"loss"`` or ``"confidence"``: which fooling point is kept (see above).
        batch_size, progress, seed: see :class:`~advdefense.attacks.base.Attack`.

    ``result.queries`` = forward passes per example: restarts * (steps + 1) (steps with a
    backward) without early stop, fewer for examples fooled early with it.
    """

    name = "pgd"

    def __init__(self, eps: float = 0.3, alpha: float = 0.01, steps: int = 40,
                 random_start: bool = True, restarts: int = 1, loss: str = "ce",
                 targeted: bool = False, early_stop: bool = False, select: str = "loss",
                 batch_size: int = 256, progress: bool = False, seed: int = 0) -> None:
        super().__init__(steps, random_start, restarts, loss, targeted, early_stop, select,
                         batch_size, progress, seed)
        check_range("attack.eps", eps, 0.0, 1.0)
        check_range("attack.alpha", alpha, 0.0, 1.0, lo_open=True)
        self.eps, self.alpha = float(eps), float(alpha)

    @property
    def threat_model(self) -> ThreatModel:
        """L-infinity ball of radius ``eps``, gradient access."""
        return ThreatModel(Linf(self.eps), Gradient())

    def _input_only(self) -> bool:
        return self.eps == 0

    def _start(self, images: torch.Tensor, idx: torch.Tensor, generator: torch.Generator,
               restart: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The (random) start in the eps ball; bounds: the ball's box (lo, hi)."""
        x, lo, hi = linf_start(images, idx, self.eps, self.random_start, generator)
        return x, (lo, hi)

    def _step(self, x: torch.Tensor, grad: torch.Tensor, sign: float,
              bounds: tuple[torch.Tensor, ...], restart: int) -> torch.Tensor:
        """A signed-gradient step of ``alpha``, projected onto the box."""
        lo, hi = bounds
        return torch.minimum(torch.maximum(x + (sign * self.alpha) * grad.sign(), lo), hi)
