"""Jacobian-based Saliency Map Attack (pairwise saliency map, L0).

Papernot, McDaniel, Jha, Fredrikson, Celik, Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016, https://arxiv.org/abs/1511.07528.

Gradients are of the **logits** (the paper's alternative "F = output of the last hidden
layer", as in cleverhans), not of the softmax: softmax gradients vanish on a confident model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advdefense.attacks.base import Attack, AttackResult, channels_last, check_int, other_class
from advdefense.attacks.threat import L0, PIXELS, Gradient, ThreatModel
from advdefense.checks import ConfigError, check_choice, check_range


def best_pairs(u: torch.Tensor, v: torch.Tensor,
               exhaustive: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the pixel pair (p != q) maximizing (u_p + u_q)(v_p + v_q) with both sums > 0.

    With ``u = alpha``, ``v = -beta`` (theta > 0) this is the paper's pair with alpha > 0,
    beta < 0 maximizing alpha * |beta|; with ``u = -alpha``, ``v = beta`` (theta < 0) the pair
    with alpha < 0, beta > 0 maximizing |alpha| * beta. Pixels outside the search domain have
    ``u = v = -inf``.

    ``exhaustive=True`` scores all D x D pairs. The default is exact too but cheaper: sort the
    pixels by (u, v) descending; a pixel preceded by two or more pixels with v at least as
    large is weakly dominated by one of them that is not its partner, and swapping it for that
    one keeps both sums positive and never lowers the product. So an optimal pair lies among
    pixels preceded by at most one such pixel (two Pareto layers, typically a few dozen), and
    the D x D search shrinks to K x K over those.

    Shape: u, v (M, D) -> p (M,), q (M,) int64 and found (M,) bool (False: no valid pair).
    """
    m, d = u.shape
    if exhaustive:
        idx = torch.arange(d, device=u.device).expand(m, d)
        valid = u.isfinite() & v.isfinite()
    else:
        idx, valid = _pareto_candidates(u, v)
    uc = u.gather(1, idx).masked_fill(~valid, float("-inf"))
    vc = v.gather(1, idx).masked_fill(~valid, float("-inf"))
    a = uc[:, :, None] + uc[:, None, :]
    b = vc[:, :, None] + vc[:, None, :]
    k = idx.shape[1]
    ok = (a > 0) & (b > 0) & ~torch.eye(k, dtype=torch.bool, device=u.device)
    score = torch.where(ok, a * b, torch.full_like(a, float("-inf"))).flatten(1)
    best, flat = score.max(1)
    p, q = idx.gather(1, (flat // k)[:, None]), idx.gather(1, (flat % k)[:, None])
    return p.squeeze(1), q.squeeze(1), best > float("-inf")


def _pareto_candidates(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (M, K) of pixels preceded (in (u, v)-descending order) by <= 1 pixel with
    v at least as large, and a (M, K) mask of which entries are real (rows are padded)."""
    order = v.argsort(dim=1, descending=True, stable=True)
    order = order.gather(1, u.gather(1, order).argsort(dim=1, descending=True, stable=True))
    vs = v.gather(1, order)
    ninf = torch.full_like(vs[:, :1], float("-inf"))
    m1 = vs.cummax(1).values
    m2 = torch.minimum(torch.cat([ninf, m1[:, :-1]], 1), vs).cummax(1).values
    keep = torch.cat([ninf, m2[:, :-1]], 1) < vs
    k = max(2, int(keep.sum(1).max()))
    pos = torch.arange(vs.shape[1], device=u.device).expand_as(vs)
    first = torch.where(keep, pos, pos + vs.shape[1]).topk(k, 1, largest=False).values
    valid = first < vs.shape[1]
    return order.gather(1, first % vs.shape[1]), valid


class JSMA(Attack):
    """Targeted L0 attack toward the other class, two pixels per iteration.

    Target = the highest-scoring class other than the label (``1 - label`` for two classes).
    Per iteration, with ``alpha = d z_target / d x`` and ``beta = sum_{j != target} d z_j / d x``
    (logit gradients), the pixel pair of the search domain maximizing the pairwise saliency
    (see :func:`best_pairs`) is moved by ``theta`` and clipped to [0, 1]. The search domain
    starts as the pixels that can move in theta's direction (< 1 for theta > 0, > 0 for
    theta < 0); a pixel leaves it once saturated. An example stops when it is classified as the
    target, when no valid pair is left, or once ``k`` pixels have changed (``ceil(k / 2)``
    iterations at most; ``k`` defaults to ``2 * floor(gamma * 784 / 2)``, the paper's budget),
    each only in theta's direction. Never more than ``k`` pixels change: where a pair would
    exceed the budget only its first pixel moves. Batched over images: one forward and two
    backward passes per iteration for all unfinished images.

    Shape:
        images (N, 1, 28, 28) float in [0, 1]; labels (N,) int64; output same as images.
        ``result.info["target"]`` (N,) target class, ``["pixels"]`` (N,) pixels changed.

    Args:
        theta: change per selected pixel in intensity units, in [-1, 1] without 0
            (positive: increase pixels, negative: decrease them; paper: +1).
        gamma: largest fraction of pixels changed, in (0, 1] (paper: 0.145 on MNIST); used
            only when ``k`` is None.
        k: most pixels changed, in [1, 784], or None for ``gamma``'s budget (0.1: 78 pixels).
        fallback: when no pair meets the paper's sign conditions, move the two domain pixels
            with the largest ``u + v`` (the target-vs-other logit margin's gradient, in theta's
            direction) instead of stopping, while that sum is positive. Off = the paper's
            algorithm; on = stronger (the evaluation uses it), same pixel budget and direction.
        saliency: ``"pair"`` (the paper's pairwise map) or ``"target"``: the two domain pixels
            with the largest target-logit gradient in theta's direction, ignoring the other
            class (the Adversarial Robustness Toolbox's simplification).
        batch_size, progress: see :class:`~advdefense.attacks.base.Attack` (no ``seed``: the
            attack draws no random numbers).

    ``result.queries`` = forward passes per example (each with two backward passes) + 1.
    """

    name = "jsma"

    def __init__(self, theta: float = 1.0, gamma: float = 0.1, fallback: bool = False,
                 saliency: str = "pair", k: int | None = None, batch_size: int = 256,
                 progress: bool = False) -> None:
        super().__init__(batch_size, progress)
        check_choice("attack.saliency", saliency, ["pair", "target"])
        self.fallback, self.saliency = bool(fallback), saliency
        check_range("attack.theta", theta, -1.0, 1.0)
        if theta == 0:
            raise ConfigError("attack.theta", theta, "must be in [-1, 1] and nonzero")
        check_range("attack.gamma", gamma, 0.0, 1.0, lo_open=True)
        self.theta, self.gamma = float(theta), float(gamma)
        if k is None:
            self.k = 2 * int(self.gamma * PIXELS / 2)
        else:
            self.k = check_int("attack.k", k)
            check_range("attack.k", self.k, 1, PIXELS)
        if self.k < 1:
            raise ConfigError("attack.gamma", gamma, f"must leave a budget of >= 1 pixel of {PIXELS}")

    @property
    def threat_model(self) -> ThreatModel:
        """At most ``k`` changed pixels, only brighter (theta > 0) or darker, gradient access."""
        return ThreatModel(L0(self.k, "increase" if self.theta > 0 else "decrease"), Gradient())

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator, need_success: bool = True) -> AttackResult:
        n, dev = images.shape[0], images.device
        x = images.flatten(1).clone()
        with torch.no_grad():
            target = other_class(model(images), labels)
        domain = x < 1.0 if self.theta > 0 else x > 0.0
        active = torch.ones(n, dtype=torch.bool, device=dev)
        queries = torch.ones(n, dtype=torch.int64, device=dev)
        changed = torch.zeros_like(x, dtype=torch.bool)
        for _ in range(math.ceil(self.k / 2)):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            alpha, beta, logits = _jacobian(model, x[idx].view(-1, *images.shape[1:]),
                                            target[idx])
            queries[idx] += 1
            u, v = (alpha, -beta) if self.theta > 0 else (-alpha, beta)
            dom = domain[idx]
            u, v = u.masked_fill(~dom, float("-inf")), v.masked_fill(~dom, float("-inf"))
            if self.saliency == "target":
                p, q, found = _top_two(u)
            else:
                p, q, found = best_pairs(u, v)
            if self.fallback and not bool(found.all()):
                p, q, found = _fallback_pairs(u, v, p, q, found)
            move = found & (logits.argmax(1) != target[idx])
            # budget: new pixels (not yet changed) must fit in what is left of k
            room = self.k - changed[idx].sum(1)
            new_p, new_q = ~changed[idx, p], ~changed[idx, q]
            both = new_p.long() + new_q.long() <= room
            move &= room > 0
            active[idx[~move]] = False
            rows, p, q, both = idx[move], p[move], q[move], both[move]
            for pix, ok in ((p, torch.ones_like(both)), (q, both)):
                r, c = rows[ok], pix[ok]
                x[r, c] = (x[r, c] + self.theta).clamp(0.0, 1.0)
                changed[r, c] = True
            domain[rows] &= x[rows] < 1.0 if self.theta > 0 else x[rows] > 0.0
        adv = x.view_as(images)
        success = None
        if need_success:
            with torch.no_grad():
                success = model(adv).argmax(1) != labels
        pixels = (adv != images).flatten(1).sum(1)
        return AttackResult(adv, success, queries, {"target": target, "pixels": pixels})


def _top_two(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two largest entries of each row of ``u`` (M, D); found where both are finite."""
    top = u.topk(2, dim=1)
    return top.indices[:, 0], top.indices[:, 1], top.values[:, 1].isfinite()


def _fallback_pairs(u: torch.Tensor, v: torch.Tensor, p: torch.Tensor, q: torch.Tensor,
                    found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where ``found`` is False: the two pixels with the largest ``u + v`` (both finite, the
    pair's sum positive); elsewhere ``p``, ``q`` unchanged. Shapes as :func:`best_pairs`."""
    top = (u + v).topk(2, dim=1)
    ok = ~found & top.values[:, 1].isfinite() & (top.values.sum(1) > 0)
    p = torch.where(ok, top.indices[:, 0], p)
    q = torch.where(ok, top.indices[:, 1], q)
    return p, q, found | ok


def _jacobian(model: nn.Module, x: torch.Tensor,
              target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (M, D) of the target logit and of the sum of the other logits, and logits."""
    x = channels_last(x.detach()).requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        z_t = logits.gather(1, target[:, None]).sum()
        z_o = logits.sum() - z_t
        (ga,) = torch.autograd.grad(z_t, x, retain_graph=True)
        (gb,) = torch.autograd.grad(z_o, x)
    return ga.flatten(1), gb.flatten(1), logits.detach()
