"""Auto-PGD: L-infinity PGD with an adaptive step size, momentum and checkpoints.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690 (Algorithm 1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advdefense.attacks.base import (
    Attack,
    AttackResult,
    check_int,
    example_loss,
    improves,
    input_grad,
    linf_start,
)
from advdefense.attacks.threat import Gradient, Linf, ThreatModel
from advdefense.checks import check_choice, check_range


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)`` at which APGD may halve its step size.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (the
    paper's schedule): dense late, sparse early. Returns the increasing ``w_j >= 1`` up to
    ``steps`` (``w_0 = 0`` left out), e.g. ``[22, 41, 57, 70, 80, 87, 93, 99]`` for 100.
    """
    p, out = [0.0, 0.22], []
    while p[-1] <= 1.0:
        w = math.ceil(round(p[-1] * steps, 9))  # 0.57 * 100 is 57.000...01 in floats
        if 1 <= w <= steps and (not out or w > out[-1]):
            out.append(w)
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return out


class APGD(Attack):
    """Untargeted L-infinity APGD (Croce & Hein 2020) with a cross-entropy or margin loss.

    Per restart, from ``x0`` (uniform in the eps ball, or the input without
    ``random_start``) with step ``eta = 2 * eps``: the first step is
    ``x1 = P(x0 + eta * sign(grad))``; then ``z = P(x_k + eta * sign(grad f(x_k)))`` and
    ``x_{k+1} = P(x_k + momentum * (z - x_k) + (1 - momentum) * (x_k - x_{k-1}))``, where ``P``
    projects onto the eps ball and [0, 1]. At each checkpoint ``w_j`` (:func:`checkpoints`)
    an example's step is halved, and it restarts from its highest-loss point ``x_max`` (with
    zero momentum), if since the previous checkpoint the loss rose in fewer than
    ``rho * (w_j - w_{j-1})`` steps, or if neither its step nor its best loss changed since
    the previous checkpoint. Every quantity is per example.

    Per example the attack keeps the best point over all iterates and restarts: a
    misclassified point first, among those (or if none) the highest loss (PGD's rule, so more
    restarts never weaken it). Early stop (``early_stop=True``, the evaluation setting) is
    PGD's: a fooled example leaves the batch and keeps its *first* fooling iterate; whether an
    example is fooled is unchanged (examples do not interact: step sizes, counters and random
    starts are per example), only fooled examples' images and queries differ.

    Losses: ``"ce"`` cross-entropy; ``"margin"`` the logit margin ``z_other - z_true``, the
    two-class stand-in for the paper's DLR loss (DLR needs three classes). For two classes CE
    is ``softplus(margin)``, an increasing function of the margin, so both take the same
    signed-gradient steps and the same checkpoint decisions *until CE saturates*: in float32,
    once the softmax rounds to one (margin below about -17) CE's gradient loses the true
    logit's term and follows the other logit alone, and below about -104 it underflows to
    exactly zero, while the margin's gradient does neither. Running both (the
    ``autoattack`` cascade) guards against that masking.

    Shape:
        images (N, 1, 28, 28) float in [0, 1]; labels (N,) int64; output same as images.

    Args:
        eps: L-infinity radius in pixel-intensity units, in [0, 1]; 0 returns the input.
        steps: iterations per restart after the starting point, >= 1 (paper: 100).
        restarts: independent random restarts, >= 1.
        loss: ``"ce"`` or ``"margin"`` (see above).
        rho: checkpoint threshold on the fraction of loss-increasing steps, in (0, 1]
            (paper: 0.75).
        momentum: weight of the new gradient step vs the previous move, in (0, 1]
            (paper: 0.75; 1 = no momentum).
        random_start: start uniformly in the eps ball instead of at the input.
        early_stop: stop attacking an example once it is misclassified (see above).
        batch_size, progress, seed: see :class:`~advdefense.attacks.base.Attack`.

    ``result.queries`` = forward passes (each with a backward) per example:
    ``restarts * (steps + 1)`` without early stop, fewer for examples fooled early with it.
    """

    name = "apgd"

    def __init__(self, eps: float = 0.3, steps: int = 100, restarts: int = 1, loss: str = "ce",
                 rho: float = 0.75, momentum: float = 0.75, random_start: bool = True,
                 early_stop: bool = True, batch_size: int = 256, progress: bool = False,
                 seed: int = 0) -> None:
        super().__init__(batch_size, progress, seed)
        check_range("attack.eps", eps, 0.0, 1.0)
        check_range("attack.rho", rho, 0.0, 1.0, lo_open=True)
        check_range("attack.momentum", momentum, 0.0, 1.0, lo_open=True)
        check_choice("attack.loss", loss, ["ce", "margin"])
        self.steps = check_int("attack.steps", steps)
        self.restarts = check_int("attack.restarts", restarts)
        self.eps, self.loss, self.rho, self.momentum = float(eps), loss, float(rho), float(momentum)
        self.random_start, self.early_stop = bool(random_start), bool(early_stop)
        self.checkpoints = checkpoints(self.steps)

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this attack."""
        return {"eps": self.eps, "steps": self.steps, "restarts": self.restarts,
                "loss": self.loss, "rho": self.rho, "momentum": self.momentum,
                "random_start": self.random_start, "early_stop": self.early_stop,
                "batch_size": self.batch_size, "progress": self.progress, "seed": self.seed}

    def scaled(self, steps: int = 1, restarts: int = 1, seed: int = 0) -> APGD:
        """A copy with ``steps`` and ``restarts`` multiplied and ``seed`` added (convergence
        checks: does a larger budget, or other random starts, find more?)."""
        cfg = self.config()
        return APGD(**cfg | {"steps": cfg["steps"] * int(steps),
                             "restarts": cfg["restarts"] * int(restarts),
                             "seed": cfg["seed"] + int(seed)})

    @property
    def threat_model(self) -> ThreatModel:
        """L-infinity ball of radius ``eps``, gradient access."""
        return ThreatModel(Linf(self.eps), Gradient())

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator, need_success: bool = True) -> AttackResult:
        n, device = len(images), images.device
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
        best = images.clone()
        best_success = torch.zeros(n, dtype=torch.bool, device=device)
        best_score = torch.full((n,), float("-inf"), device=device)
        queries = torch.zeros(n, dtype=torch.int64, device=device)
        state = (best, best_success, best_score, queries)
        steps = self.steps if self.eps > 0 else 0  # eps = 0: the ball is the input itself
        for restart in range(self.restarts if self.eps > 0 else 1):
            idx = torch.arange(n, device=device)
            if self.early_stop:
                idx = idx[~best_success]
                if idx.numel() == 0:
                    break
            g = torch.Generator(device=device)
            g.manual_seed(base_seed + restart)
            self._restart(model, images, labels, g, state, idx, steps)
        return AttackResult(best, best_success, queries)

    def _start(self, images: torch.Tensor, generator: torch.Generator, idx: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """Per-example state of one restart on the examples ``idx``. The random start is drawn
        for the whole chunk, so an example's start does not depend on the others."""
        x, lo, hi = linf_start(images, idx, self.eps, self.random_start, generator)
        eta = torch.full((len(idx),), 2 * self.eps, device=images.device, dtype=images.dtype)
        return {"idx": idx, "x": x, "lo": lo, "hi": hi, "eta": eta}

    def _restart(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator, state: tuple[torch.Tensor, ...], idx: torch.Tensor,
                 steps: int) -> None:
        """One restart on the examples ``idx``; updates ``state`` (best images, success,
        score, queries) in place."""
        s = self._start(images, generator, idx)
        s["grad"], s["loss"] = self._query(model, s["x"], labels, state, s["idx"])
        s |= {"prev": s["x"], "x_max": s["x"], "grad_max": s["grad"], "loss_max": s["loss"],
              "count": torch.zeros_like(s["loss"]), "eta_ckpt": s["eta"].clone(),
              "max_ckpt": s["loss"].clone()}
        last = 0
        for k in range(steps):
            if self.early_stop and (s := self._active(s, state[1])) is None:
                return
            x, prev, eta = s["x"], s["prev"], s["eta"][:, None, None, None]
            z = torch.minimum(torch.maximum(x + eta * s["grad"].sign(), s["lo"]), s["hi"])
            if k > 0:
                z = x + self.momentum * (z - x) + (1 - self.momentum) * (x - prev)
                z = torch.minimum(torch.maximum(z, s["lo"]), s["hi"])
            grad, loss = self._query(model, z, labels, state, s["idx"])
            s["count"] += loss > s["loss"]
            up = loss > s["loss_max"]
            s["x_max"] = torch.where(up[:, None, None, None], z, s["x_max"])
            s["grad_max"] = torch.where(up[:, None, None, None], grad, s["grad_max"])
            s["loss_max"] = torch.where(up, loss, s["loss_max"])
            s |= {"prev": x, "x": z, "grad": grad, "loss": loss}
            if k + 1 in self.checkpoints:
                self._checkpoint(s, k + 1 - last)
                last = k + 1

    def _checkpoint(self, s: dict[str, torch.Tensor], span: int) -> None:
        """Halve the step of the examples that stalled and move them back to ``x_max``."""
        stalled = (s["count"] < self.rho * span) | (
            (s["eta"] == s["eta_ckpt"]) & (s["loss_max"] == s["max_ckpt"]))
        s["eta_ckpt"], s["max_ckpt"] = s["eta"].clone(), s["loss_max"].clone()
        s["eta"] = torch.where(stalled, s["eta"] / 2, s["eta"])
        back = stalled[:, None, None, None]
        s["x"] = torch.where(back, s["x_max"], s["x"])
        s["prev"] = torch.where(back, s["x_max"], s["prev"])
        s["grad"] = torch.where(back, s["grad_max"], s["grad"])
        s["loss"] = torch.where(stalled, s["loss_max"], s["loss"])
        s["count"] = torch.zeros_like(s["count"])

    def _active(self, s: dict[str, torch.Tensor], success: torch.Tensor
                ) -> dict[str, torch.Tensor] | None:
        """``s`` restricted to the examples not yet fooled (None when none is left)."""
        active = ~success[s["idx"]]
        if bool(active.all()):
            return s
        if not bool(active.any()):
            return None
        return {key: value[active] for key, value in s.items()}

    def _query(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
               state: tuple[torch.Tensor, ...], idx: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient and per-example loss at ``x`` (rows = examples ``idx``); counts one query
        and keeps better points in ``state``."""
        y = labels[idx]
        grad, logits = input_grad(model, x, y, self.loss)
        loss = example_loss(logits, y, self.loss)
        best_x, best_success, best_score, queries = state
        queries[idx] += 1
        success = logits.argmax(1) != y
        better = improves(success, loss, best_success[idx], best_score[idx])
        rows = idx[better]
        best_x[rows] = x[better]
        best_success[rows] |= success[better]
        best_score[rows] = loss[better]
        return grad, loss
