"""Query-only black-box local search (LocSearchAdv).

Narodytska, Kasiviswanathan, "Simple Black-Box Adversarial Perturbations for Deep Networks",
CVPR Workshops 2017, https://arxiv.org/abs/1612.06299.

Adaptation to [0, 1] images (documented choices). The paper works in centred coordinates
with pixel bounds [LB, UB]; here ``z = 2 x - 1`` and [LB, UB] = [-1, 1].

* Probe (the paper's PERT). The paper scores a candidate pixel by setting it to
  ``p * sign(z)`` with a large ``p`` (e.g. 100), far outside the image domain. Queries here
  stay valid images in [0, 1] (a defended model may clamp or binarize its input, and a real
  black box takes images), and pushing a saturated pixel further out - most MNIST pixels are
  0 or 1 - would then be a no-op. The probe therefore moves the pixel towards the opposite
  extreme: ``z <- -p * sign(z)`` (sign(0) = +1), ``p`` in (0, 1]; ``p = 1`` flips a black pixel
  to white and a white one to black. This is the strongest in-range probe.
* Applied perturbation (``update``): ``"probe"`` (default, strongest measured) sets the ``t``
  best-scoring pixels to exactly their probe value, i.e. applies the change that was scored;
  ``"cyclic"`` is the paper's ``CYC(r * z)`` (values above UB wrap by -(UB - LB), below LB by
  +(UB - LB)); r slightly above 1 nearly flips saturated pixels (r = 1.1: 0 -> 0.95), the
  paper's r = 1.5 maps 0 -> 0.75. On 32 test digits of an undefended SmallCNN with 3000
  queries: probe 100% success, cyclic r=1.1 94%, cyclic r=1.5 84%.
* Score = logit margin ``z_true - max_other z`` with the probed pixel (lower = better). For
  two classes it ranks candidates exactly like the paper's true-class probability, but does
  not saturate: a confident model's probability is 1.0 in float32 for every probe, which ties
  all candidates and makes the search toggle the same pixels.
* The next neighbourhood is every pixel within Chebyshev distance ``d`` of the ``t`` chosen
  ones; the first is a seeded random 10% of the pixels.

Pixel budget ``k`` (not in the paper, which has none): at most ``k`` pixels differ from the
original in every probe and every applied change. An image with ``k`` changed pixels probes only
its changed pixels (moving one back or elsewhere); otherwise each probe changes one more pixel
at most, and a round applies the best-scoring probes in score order, skipping a new pixel once
the budget is full.

Queries are counted per example (1 for the clean image, 1 per probe, 1 check per round) and
never exceed ``max_queries``: when a neighbourhood is larger than the remaining budget a seeded
random subset of it is probed. No gradients: every forward pass runs under ``torch.no_grad``.
"""

from __future__ import annotations

import torch
from torch import nn

from advdefense.attacks.base import Attack, AttackResult, channels_last, check_int, example_loss
from advdefense.attacks.threat import L0, PIXELS, Linf, Queries, ThreatModel
from advdefense.checks import ConfigError, check_choice, check_range


class LocalSearch(Attack):
    """LocSearchAdv, batched over images: many probes per image in one forward batch.

    Shape:
        images (N, 1, 28, 28) float in [0, 1]; labels (N,) int64; output same as images.
        ``result.queries`` (N,) forward queries spent, ``<= max_queries``;
        ``result.info["rounds"]`` (N,) rounds run.

    Args:
        p: probe magnitude in centred units, in (0, 1] (1 = move to the opposite extreme).
        r: cyclic perturbation factor for ``update="cyclic"``, in (1, 3) (paper: 1.5).
        d: neighbourhood radius in pixels (Chebyshev), >= 0 (paper: 5).
        t: pixels perturbed per round, >= 1 (paper: 5).
        rounds: maximum rounds per image, >= 1 (paper: 150).
        max_queries: forward-query budget per image, >= 2.
        init_fraction: fraction of pixels in the first random candidate set, in (0, 1].
        update: ``"probe"`` (set chosen pixels to their probe value) or ``"cyclic"`` (paper).
        eval_batch: probe images per forward pass (memory bound), >= 1.
        eps: None (the paper: pixels may move anywhere in [0, 1]) or an L-infinity radius in
            [0, 1]: every probe and every applied change is clipped to ``[x - eps, x + eps]``
            around the original image, a gradient-free attack in the threat model of FGSM/PGD
            (a check on defenses whose gradients are approximated, e.g. bit-depth reduction).
        k: None (no pixel limit) or the most pixels changed per image, in [1, 784] (see the
            module docstring); not together with ``eps``.
        batch_size, progress, seed: see :class:`~advdefense.attacks.base.Attack`.
    """

    name = "local_search"

    def __init__(self, p: float = 1.0, r: float = 1.1, d: int = 5, t: int = 5,
                 rounds: int = 150, max_queries: int = 20000, init_fraction: float = 0.1,
                 update: str = "probe", eval_batch: int = 4096, eps: float | None = None,
                 k: int | None = None, batch_size: int = 256, progress: bool = False,
                 seed: int = 0) -> None:
        super().__init__(batch_size, progress, seed)
        if eps is not None:
            check_range("attack.eps", eps, 0.0, 1.0)
        self.eps = None if eps is None else float(eps)
        if k is not None:
            if eps is not None:
                raise ConfigError("attack.k", k, "set attack.k (an L0 budget) or attack.eps (an "
                                  "L-inf radius), not both; use k=null for the L-inf search")
            check_range("attack.k", check_int("attack.k", k), 1, PIXELS)
        self.k = None if k is None else int(k)
        check_choice("attack.update", update, ["probe", "cyclic"])
        self.update = update
        check_range("attack.p", p, 0.0, 1.0, lo_open=True)
        check_range("attack.r", r, 1.0, 3.0, lo_open=True, hi_open=True)
        check_range("attack.init_fraction", init_fraction, 0.0, 1.0, lo_open=True)
        self.p, self.r, self.init_fraction = float(p), float(r), float(init_fraction)
        self.d, self.t = check_int("attack.d", d, 0), check_int("attack.t", t)
        self.rounds = check_int("attack.rounds", rounds)
        self.max_queries = check_int("attack.max_queries", max_queries, 2)
        self.eval_batch = check_int("attack.eval_batch", eval_batch)

    @property
    def threat_model(self) -> ThreatModel:
        """Query access (``max_queries``); L-inf ``eps``, else L0 ``k`` (784: no pixel limit)."""
        pert = Linf(self.eps) if self.eps is not None else L0(self.k or PIXELS)
        return ThreatModel(pert, Queries(self.max_queries))

    @torch.no_grad()
    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator, need_success: bool = True) -> AttackResult:
        n, dev = images.shape[0], images.device
        x = images.flatten(1).clone()
        lo, hi = self._bounds(x)
        queries = torch.ones(n, dtype=torch.int64, device=dev)
        rounds = torch.zeros(n, dtype=torch.int64, device=dev)
        success = model(images).argmax(1) != labels
        n_init = max(1, int(self.init_fraction * x.shape[1]))
        order = torch.rand(x.shape, generator=generator, device=dev).argsort(1)
        cand = torch.zeros_like(x, dtype=torch.bool).scatter_(1, order[:, :n_init], True)
        for _ in range(self.rounds):
            active = (~success & (queries <= self.max_queries - 2)).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            budget = self.max_queries - 1 - queries[active]
            changed = x[active] != images.flatten(1)[active]
            cand_a = cand[active] if self.k is None else _in_pixel_budget(cand[active], changed,
                                                                          self.k)
            keep = self._within_budget(cand_a, budget, generator)
            scores = self._probe(model, x[active], labels[active], keep, lo[active], hi[active])
            if self.k is not None:
                scores = _cap_new_pixels(scores, changed, self.k)
            chosen = self._perturb(x, active, scores, keep, lo[active], hi[active])
            queries[active] += keep.sum(1) + 1
            rounds[active] += 1
            logits = _batched(model, x[active].view(-1, *images.shape[1:]), self.eval_batch)
            success[active] = logits.argmax(1) != labels[active]
            cand[active] = self._neighbourhood(chosen, images.shape[-2:])
        adv = x.view_as(images)
        return AttackResult(adv, success, queries, {"rounds": rounds})

    def _within_budget(self, cand: torch.Tensor, budget: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
        """Candidates (m, D) to probe, a seeded random subset where more than ``budget``."""
        if bool((cand.sum(1) <= budget).all()):
            return cand
        noise = torch.rand(cand.shape, generator=generator, device=cand.device)
        noise = noise.masked_fill(~cand, 2.0)
        rank = noise.argsort(1).argsort(1)
        return cand & (rank < budget[:, None])

    def _bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel value bounds (N, D): [0, 1], or the eps box around ``x`` within it."""
        if self.eps is None:
            return torch.zeros_like(x), torch.ones_like(x)
        return (x - self.eps).clamp(0.0, 1.0), (x + self.eps).clamp(0.0, 1.0)

    def _probe(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
               keep: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """True-class margin with each kept pixel probed alone; (m, D), inf elsewhere."""
        img, pix = keep.nonzero(as_tuple=True)
        probes = x[img]
        z = 2.0 * probes[torch.arange(len(img), device=x.device), pix] - 1.0
        sign = torch.where(z >= 0, 1.0, -1.0)
        value = torch.minimum(torch.maximum((1.0 - self.p * sign) / 2.0, lo[img, pix]),
                              hi[img, pix])
        probes[torch.arange(len(img), device=x.device), pix] = value
        logits = _batched(model, probes.view(-1, 1, 28, 28), self.eval_batch)
        scores = torch.full(keep.shape, float("inf"), device=x.device)
        scores[img, pix] = -example_loss(logits.float(), labels[img], "margin")
        return scores

    def _perturb(self, x: torch.Tensor, active: torch.Tensor, scores: torch.Tensor,
                 keep: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Apply CYC(r z) to the t lowest-scoring probed pixels of each active image."""
        k = min(self.t, scores.shape[1])
        low, idx = scores.topk(k, dim=1, largest=False)
        chosen = torch.zeros_like(keep).scatter_(1, idx, low.isfinite())
        xa = x[active]
        z = 2.0 * xa - 1.0
        if self.update == "cyclic":
            v = self.r * z
            v = torch.where(v > 1.0, v - 2.0, torch.where(v < -1.0, v + 2.0, v)).clamp(-1.0, 1.0)
        else:
            v = -self.p * torch.where(z >= 0, 1.0, -1.0)
        x[active] = torch.where(chosen, torch.minimum(torch.maximum((v + 1.0) / 2.0, lo), hi), xa)
        return chosen

    def _neighbourhood(self, chosen: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Pixels within Chebyshev distance d of a chosen pixel; (m, D) bool."""
        grid = chosen.float().view(-1, 1, *size)
        near = nn.functional.max_pool2d(grid, 2 * self.d + 1, stride=1, padding=self.d)
        return near.flatten(1) > 0


def _in_pixel_budget(cand: torch.Tensor, changed: torch.Tensor, k: int) -> torch.Tensor:
    """Candidates (m, D) whose probe keeps <= k changed pixels: where ``k`` pixels have changed
    already, only changed ones (all of them if no candidate is)."""
    full = changed.sum(1, keepdim=True) >= k
    only = cand & changed
    only = torch.where(only.any(1, keepdim=True), only, changed)
    return torch.where(full, only, cand)


def _cap_new_pixels(scores: torch.Tensor, changed: torch.Tensor, k: int) -> torch.Tensor:
    """``scores`` (m, D) with inf on every unchanged pixel beyond the first ``k - changed`` in
    score order, so applying any of the finite ones keeps <= k changed pixels."""
    order = scores.argsort(1)
    new = (~changed & scores.isfinite()).gather(1, order)
    room = k - changed.sum(1, keepdim=True)
    over = new & (new.long().cumsum(1) > room)
    drop = torch.zeros_like(over).scatter_(1, order, over)
    return scores.masked_fill(drop, float("inf"))


def _batched(model: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """Forward ``x`` in chunks of ``size`` (caller holds no_grad)."""
    if x.shape[0] <= size:
        return model(channels_last(x))
    return torch.cat([model(channels_last(x[i:i + size])) for i in range(0, x.shape[0], size)])
