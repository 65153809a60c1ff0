"""Certified L0 robustness of a randomized-ablation classifier (Levine & Feizi, AAAI 2020).

For an image x, let p be the probability that the base net, on a uniformly random ablation
keeping ``k`` of the ``d`` pixels, votes for class c. Changing ``rho`` pixels of x changes only
the ablations that keep one of them, a share ``Delta(rho) = 1 - C(d - rho, k) / C(d, k)``, so
for two classes the smoothed prediction cannot change while ``p - Delta(rho) > 0.5``
(Levine & Feizi, Theorem 1 with the other class's probability bounded by 1 - p). With ``p``
replaced by a one-sided Clopper-Pearson lower bound at level ``1 - alpha`` from ``n`` samples,
each image's certificate holds with probability at least ``1 - alpha`` (Cohen et al.'s CERTIFY
procedure: ``n0`` separate samples pick the class, ``n`` samples bound its probability).

Convention:
    radius = the largest ``rho`` with ``p_lower > 0.5 + Delta(rho)``; -1 = abstain (the bound
    does not even exceed 0.5); certified accuracy at r counts images with a correct (non-abstained)
    prediction and radius >= r. Certified figures are guarantees and never mix with the
    empirical (attack) figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from advdefense.ablation import AblatedClassifier
from advdefense.checks import ConfigError, check_images, check_labels


def _betacf(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, iters: int = 2000,
            eps: float = 1e-15) -> torch.Tensor:
    """Continued fraction of the incomplete beta function (modified Lentz), elementwise."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = torch.ones_like(x)
    d = 1.0 - qab * x / qap
    d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d)
    d = 1.0 / d
    h = d.clone()
    for m in range(1, iters + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d)
            c = 1.0 + aa / c
            c = torch.where(c.abs() < tiny, torch.full_like(c, tiny), c)
            d = 1.0 / d
            delta = d * c
            h = h * delta
        if bool(((delta - 1.0).abs() < eps).all()):
            break
    return h


def betainc(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0, x in [0, 1] (float64).

    torch has no ``betainc``; this evaluates the continued fraction on the side where it
    converges fast (x < (a + 1) / (a + b + 2)) and uses I_x(a, b) = 1 - I_{1-x}(b, a) otherwise.
    """
    a, b, x = (torch.as_tensor(v, dtype=torch.float64) for v in (a, b, x))
    a, b, x = torch.broadcast_tensors(a, b, x)
    xc = x.clamp(1e-300, 1 - 1e-16)
    log_front = (torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)
                 + a * torch.log(xc) + b * torch.log1p(-xc))
    front = torch.exp(log_front)
    direct = x < (a + 1.0) / (a + b + 2.0)
    aa, bb, xx = torch.where(direct, a, b), torch.where(direct, b, a), torch.where(direct, xc, 1 - xc)
    cf = _betacf(aa, bb, xx)
    value = torch.where(direct, front * cf / a, 1.0 - front * cf / b)
    value = torch.where(x <= 0, torch.zeros_like(value), value)
    return torch.where(x >= 1, torch.ones_like(value), value).clamp(0.0, 1.0)


def clopper_pearson_lower(successes: torch.Tensor | int, n: int, alpha: float = 0.001,
                          iters: int = 60) -> torch.Tensor:
    """One-sided Clopper-Pearson lower bound on a binomial probability, at level 1 - alpha.

    The bound is the ``alpha`` quantile of Beta(successes, n - successes + 1), i.e. the p with
    P(Binomial(n, p) >= successes) = alpha (0 when successes = 0), found by bisection on the
    regularized incomplete beta (the binomial upper tail equals I_p(successes, n - successes + 1)).

    Args:
        successes: int or (N,) integer counts in [0, n].
        n: number of trials, >= 1.
        alpha: one-sided error probability, in (0, 1).
        iters: bisection steps (60 gives float64 resolution).

    Returns:
        float64 tensor of the same shape as ``successes``, values in [0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError("certify.alpha", alpha, "a number in (0, 1)")
    if n < 1:
        raise ConfigError("certify.n", n, "a positive integer (samples per image)")
    k = torch.as_tensor(successes, dtype=torch.float64)
    if bool(((k < 0) | (k > n)).any()):
        raise ValueError(f"successes must lie in [0, n={n}]")
    lo, hi = torch.zeros_like(k), torch.ones_like(k)
    a, b = k.clamp(min=1.0), n - k + 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        above = betainc(a, b, mid) > alpha  # tail probability increases with p
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return torch.where(k <= 0, torch.zeros_like(lo), lo)


def ablation_delta(rho: int, keep: int, d: int = 784) -> float:
    """Levine & Feizi's Delta: the share of keep-subsets of d pixels that meet ``rho`` given pixels.

    ``Delta(rho) = 1 - C(d - rho, keep) / C(d, keep)`` (exact integer binomials).
    """
    if not 0 <= rho <= d or not 1 <= keep <= d:
        raise ValueError(f"need 0 <= rho <= d and 1 <= keep <= d, got rho={rho}, keep={keep}, d={d}")
    return 1.0 - math.comb(d - rho, keep) / math.comb(d, keep)


@lru_cache(maxsize=64)
def _deltas(keep: int, d: int) -> torch.Tensor:
    return torch.tensor([ablation_delta(r, keep, d) for r in range(d - keep + 1)], dtype=torch.float64)


def certified_radius(p_lower: torch.Tensor, keep: int, d: int = 784) -> torch.Tensor:
    """Largest rho with ``p_lower > 0.5 + Delta(rho)`` per entry; -1 where ``p_lower <= 0.5``.

    Args:
        p_lower: (N,) lower bounds on the top class's probability.
        keep: pixels kept per ablation; d: pixels per image.

    Returns:
        (N,) int64 radii in [-1, d - keep].
    """
    deltas = _deltas(int(keep), int(d)).to(p_lower.device)  # increasing in rho, Delta(0) = 0
    ok = p_lower.double().unsqueeze(1) > 0.5 + deltas
    return ok.sum(1) - 1


@dataclass
class Certificate:
    """Per-image certification results (all tensors of length N, on the CPU).

    ``pred``: the smoothed class, -1 where abstained; ``counts``: votes for ``pred`` (or the
    selected class) among ``n``; ``p_lower``: its Clopper-Pearson lower bound; ``radius``:
    certified L0 radius (-1 = abstain); ``correct``: pred == label.
    """

    pred: torch.Tensor
    counts: torch.Tensor
    p_lower: torch.Tensor
    radius: torch.Tensor
    correct: torch.Tensor
    keep: int
    n0: int
    n: int
    alpha: float

    def accuracy_at(self, radii: list[int] | range) -> list[float]:
        """Certified accuracy at each radius r: share of images correct with radius >= r."""
        if len(self.radius) == 0:
            return [0.0 for _ in radii]
        return [float((self.correct & (self.radius >= r)).float().mean()) for r in radii]


def ablated_parts(model: nn.Module) -> tuple[nn.Module, AblatedClassifier] | None:
    """(deterministic preprocessing, ablated classifier) of a model, or None if not ablated.

    Accepts an :class:`AblatedClassifier`, a member pipeline ``Sequential(preprocess, net)``
    whose net is one, or a registry ``CheckedModel`` around either.
    """
    inner = getattr(model, "model", model)
    if isinstance(inner, AblatedClassifier):
        return nn.Identity(), inner
    if isinstance(inner, nn.Sequential) and isinstance(getattr(inner, "net", None), AblatedClassifier):
        return inner.preprocess, inner.net
    return None


@torch.inference_mode()
def certify(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, n0: int = 100,
            n: int = 10_000, alpha: float = 0.001, batch_size: int = 16384,
            generator: torch.Generator | None = None) -> Certificate:
    """Certify an L0 radius per image (Cohen et al.'s CERTIFY with Levine & Feizi's Delta).

    Args:
        model: an ablated classifier or a model containing one (see :func:`ablated_parts`).
        images: (N, 1, 28, 28) float in [0, 1]; labels: (N,) int64 in {0, 1}.
        n0: samples that select the top class.
        n: samples that bound its probability (separate from the n0).
        alpha: each image's certificate fails with probability at most alpha.
        batch_size: ablated inputs per forward.
        generator: optional generator for the ablations (reproducible certificates).

    Returns:
        a :class:`Certificate`.
    """
    parts = ablated_parts(model)
    if parts is None:
        raise TypeError(f"{type(model).__name__} is not a randomized-ablation model "
                        "(advdefense.ablation.AblatedClassifier); only those can be certified")
    if isinstance(n0, bool) or not isinstance(n0, int) or n0 < 1:
        raise ConfigError("certify.n0", n0, "a positive integer (selection samples per image)")
    check_images(images)
    check_labels(labels, len(images))
    preprocess, ablated = parts
    was_training = ablated.training
    ablated.eval()
    try:
        x = preprocess(images)
        top = ablated.count_votes(x, n0, batch_size, generator=generator).argmax(1)
        counts = ablated.count_votes(x, n, batch_size, generator=generator)
    finally:
        ablated.train(was_training)
    n_top = counts.gather(1, top.unsqueeze(1)).squeeze(1).cpu()
    p_lower = clopper_pearson_lower(n_top, n, alpha)
    radius = certified_radius(p_lower, ablated.keep, images.shape[-1] * images.shape[-2])
    top = top.cpu()
    pred = torch.where(radius >= 0, top, torch.full_like(top, -1))
    return Certificate(pred, n_top, p_lower, radius, pred == labels.cpu(), ablated.keep, n0, n,
                       float(alpha))
