"""Sparse-RS: score-based random search over k pixels and their values (query-only L0).

Croce, Andriushchenko, Singh, Flammarion, Hein, "Sparse-RS: a Versatile Framework for
Query-Efficient Sparse Black-Box Adversarial Attacks", AAAI 2022, https://arxiv.org/abs/2006.12834.

The pixel (L0) version, for one-channel images in [0, 1]:

* The perturbation is a set of ``k`` pixel positions and a value for each, in {0, 1} (the
  vertices of the value box: the paper's choice for L0); the adversarial image is the original
  with those pixels set. At most ``k`` pixels differ from the original, always.
* Start: ``k`` positions drawn uniformly, each set to the extreme value farther from the
  original pixel (the paper draws uniformly from {0, 1}; a value equal to the original would
  waste one of the ``k`` pixels, so where the original is exactly 0 or 1 the other extreme is
  taken, elsewhere a fair coin decides).
* Iteration ``i``: ``m = max(1, floor(alpha_i * k))`` of the ``k`` positions, drawn uniformly,
  move to ``m`` positions drawn uniformly among the pixels not in the set, with new values as
  at the start. The candidate is kept only if the margin ``z_true - max_other z`` drops
  (strictly). ``alpha_i`` is ``p_init`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000,
  6000 and 8000 of a 10,000-query budget (the paper's schedule, from Square Attack; for another
  budget the iteration is rescaled to it).
* An image stops as soon as it is misclassified (early exit), or when its queries run out.

Queries are counted per image and never exceed ``max_queries``: 1 for the clean image (an image
already misclassified stops there), 1 for the start, 1 per iteration. No gradients: every
forward pass runs under ``torch.no_grad``.
"""

from __future__ import annotations

import bisect

import torch
from torch import nn

from advdefense.attacks.base import Attack, AttackResult, channels_last, check_int, margin_loss
from advdefense.attacks.threat import L0, PIXELS, Queries, ThreatModel
from advdefense.checks import check_range

# iterations (of a 10,000-query budget) after which alpha halves once more
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def alpha_schedule(i: int, p_init: float, max_queries: int) -> float:
    """Share of the ``k`` positions resampled at iteration ``i`` (the paper's step schedule)."""
    scaled = int(i / max_queries * 10_000)
    return p_init / 2 ** bisect.bisect_left(_HALVINGS, scaled)


class SparseRS(Attack):
    """Query-only L0 attack: random search over ``k`` pixels, batched over images.

    Shape:
        images (N, 1, 28, 28) float in [0, 1]; labels (N,) int64; output same as images, and
        every output differs from its input in at most ``k`` pixels, each set to 0 or 1.
        ``result.queries`` (N,) forward queries spent, ``<= max_queries``;
        ``result.info["pixels"]`` (N,) pixels changed.

    Args:
        k: most pixels changed per image, in [1, 784].
        max_queries: forward-query budget per image, >= 2 (paper: 10,000).
        p_init: share of the ``k`` positions resampled at the start of the schedule, in (0, 1]
            (paper: 0.3 for L0 pixel attacks).
        eval_batch: images per forward pass (memory bound), >= 1.
        batch_size, progress, seed: see :class:`~advdefense.attacks.base.Attack`.
    """

    name = "sparse_rs"

    def __init__(self, k: int = 20, max_queries: int = 10_000, p_init: float = 0.3,
                 eval_batch: int = 4096, batch_size: int = 256, progress: bool = False,
                 seed: int = 0) -> None:
        super().__init__(batch_size, progress, seed)
        self.k = check_int("attack.k", k)
        check_range("attack.k", self.k, 1, PIXELS)
        self.max_queries = check_int("attack.max_queries", max_queries, 2)
        check_range("attack.p_init", p_init, 0.0, 1.0, lo_open=True)
        self.p_init = float(p_init)
        self.eval_batch = check_int("attack.eval_batch", eval_batch)

    @property
    def threat_model(self) -> ThreatModel:
        """At most ``k`` changed pixels (any direction), ``max_queries`` forward queries."""
        return ThreatModel(L0(self.k), Queries(self.max_queries))

    @torch.no_grad()
    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator, need_success: bool = True) -> AttackResult:
        n, dev = images.shape[0], images.device
        x0 = images.flatten(1)
        k = min(self.k, x0.shape[1])
        queries = torch.ones(n, dtype=torch.int64, device=dev)
        margin, success = self._score(model, x0, labels, images.shape)
        pos = torch.rand(x0.shape, generator=generator, device=dev).argsort(1)[:, :k]
        val = self._values(x0, pos, generator)
        # an image misclassified as it is stays untouched; the others start from a random set
        adv = torch.where(success[:, None], x0, x0.scatter(1, pos, val))
        todo = (~success).nonzero().squeeze(1)
        if todo.numel():
            queries[todo] += 1
            margin[todo], success[todo] = self._score(model, adv[todo], labels[todo],
                                                      images.shape)
        for i in range(self.max_queries - 2):
            active = (~success).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            m = max(1, int(alpha_schedule(i, self.p_init, self.max_queries) * k))
            new_pos, new_val, slots = self._propose(x0[active], pos[active], m, generator)
            cand_pos = pos[active].scatter(1, slots, new_pos)
            cand_val = val[active].scatter(1, slots, new_val)
            cand = x0[active].scatter(1, cand_pos, cand_val)
            queries[active] += 1
            cand_margin, cand_success = self._score(model, cand, labels[active], images.shape)
            better = cand_margin < margin[active]
            rows = active[better]
            pos[rows], val[rows], adv[rows] = cand_pos[better], cand_val[better], cand[better]
            margin[rows], success[rows] = cand_margin[better], cand_success[better]
        out = adv.view_as(images)
        pixels = (out != images).flatten(1).sum(1)
        return AttackResult(out, success, queries, {"pixels": pixels})

    def _score(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
               shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """Margin ``z_true - max_other z`` (lower = closer to fooled) and misclassified, (m,)."""
        batch = x.view(-1, *shape[1:])
        logits = torch.cat([model(channels_last(batch[i:i + self.eval_batch]))
                            for i in range(0, batch.shape[0], self.eval_batch)]).float()
        return -margin_loss(logits, labels), logits.argmax(1) != labels

    @staticmethod
    def _values(x0: torch.Tensor, pos: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Values in {0, 1} for the pixels ``pos`` (m, j): the other extreme where the original
        is exactly 0 or 1, a fair coin elsewhere."""
        orig = x0.gather(1, pos)
        coin = (torch.rand(pos.shape, generator=generator, device=x0.device) < 0.5).to(x0.dtype)
        return torch.where(orig == 0, 1.0, torch.where(orig == 1, 0.0, coin)).to(x0.dtype)

    def _propose(self, x0: torch.Tensor, pos: torch.Tensor, m: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``m`` slots (of ``k``) to move, ``m`` new positions outside the set and their values."""
        rows, k = pos.shape
        slots = torch.rand(rows, k, generator=generator, device=x0.device).topk(m, 1).indices
        if k >= x0.shape[1]:  # every pixel is in the set: draw new values in place
            new_pos = pos.gather(1, slots)
            coin = torch.rand(new_pos.shape, generator=generator, device=x0.device) < 0.5
            return new_pos, coin.to(x0.dtype), slots
        noise = torch.rand(x0.shape, generator=generator, device=x0.device)
        noise.scatter_(1, pos, -1.0)  # positions in the set are never drawn
        new_pos = noise.topk(m, 1).indices
        return new_pos, self._values(x0, new_pos, generator), slots
