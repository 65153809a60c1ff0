"""Worst-case rotation and translation: exhaustive grid or worst-of-k random search.

Engstrom, Tran, Tsipras, Schmidt, Madry, "Exploring the Landscape of Spatial Robustness"
(first titled "A Rotation and a Translation Suffice"), ICML 2019,
https://arxiv.org/abs/1712.02779. The ``uae_warmup`` preset is the spatial grid attack of the
MNIST warm-up evaluation kit of Google's Unrestricted Adversarial Examples challenge (Brown et
al. 2018, https://arxiv.org/abs/1809.08352; ``unrestricted_advex``'s ``SpatialGridAttack``
with ``evaluate_two_class_mnist_model``'s settings).

The transform (the borders, the warp and its sign convention) is in
:mod:`advdefense.attacks.geometry`.

The warm-up kit's transform, as facts (what :func:`~advdefense.attacks.geometry.kit_border`
and the ``uae_warmup`` preset do):

* black border (``apply_black_border``, border 4): the 28 x 28 digit is resized to 24 x 24 with
  TensorFlow 1's ``tf.image.resize_images`` (bilinear, ``align_corners=False``, no half-pixel
  centres: output pixel ``j`` reads the source at ``j * 28 / 24``, between ``floor`` and the
  next pixel, clamped at the last; no antialiasing) and padded with 4 black pixels to 32 x 32;
* rotation about the centre, then translation, on that image padded further (so nothing is cut
  in between), bilinear, black fill; then ``resize_image_with_crop_or_pad`` centre-crops to
  28 x 28. The crop takes 2 pixels off each side, so the 24 x 24 digit sits at offset 2 of the
  28 x 28 result. The grid (``np.linspace(-l, l, g)``): dx and dy in {-10, -5, 0, 5, 10} pixels,
  the angle in 11 steps of 2 degrees over [-10, 10]: 5 x 5 x 11 = 275 transforms;
* the validity check (``mnist_valid_check``): a transform is allowed only if
  ``|sum|after| - sum|before|| < 0.1 * sum|before|``, where ``before`` is the bordered image
  under the identity transform and ``after`` the transformed one: a transform that pushes more
  than 10% of the digit's ink mass out of the frame is not an attack.

Here the border is 24 x 24 + 2 px on each side of the 28 x 28 frame directly (the 4 px pad and the
2 px crop cancel), and rotation and translation are one warp: the content lies inside the frame,
the shifts are whole pixels, so this is the kit's two-step transform. Per image the kit's
comment asks for "the misclassified transformation of maximum xent (or just highest xent if
everything else is correct)"; its code subtracts 1e9 from the cross-entropy of the *valid*
transforms (a sign slip: it keeps the first valid fooling transform and may return invalid ones).
We implement the stated rule, with disallowed transforms never queried nor returned, and with
``select="confidence"`` the most confident wrong answer instead of the highest loss.
The earlier preset of this project, a 20 x 20 antialiased shrink with a 4 px border, is kept as
``uae_20x20`` (members trained with ``preset: uae_warmup`` before were trained with it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advdefense.attacks.base import (
    SELECT,
    Attack,
    AttackResult,
    channels_last,
    check_int,
    improves,
    selection_score,
)
from advdefense.attacks.geometry import (
    add_border,
    check_shrink,
    sampling_grids,
    spatial_transform,
    warp,
    warp_many,
)
from advdefense.attacks.threat import Queries, Spatial, ThreatModel
from advdefense.checks import check_choice, check_range

PRESETS: dict[str, dict[str, Any]] = {
    # Engstrom et al.: +-3 px in x and y (5 values each), +-30 degrees (31 values): 775.
    "engstrom": dict(max_angle=30.0, max_shift=3.0, n_angles=31, n_shifts=5, shrink="none",
                     mass_tolerance=None),
    # The UAE warm-up kit: its 24 x 24 + 2 px border, +-10 px (5 values), +-10 degrees
    # (11 values) = 275; a transform is allowed only if the pixel mass changes by < 10%.
    "uae_warmup": dict(max_angle=10.0, max_shift=10.0, n_angles=11, n_shifts=5, shrink="kit",
                       mass_tolerance=0.1),
    # This project's former "uae_warmup": the same grid on a 20 x 20 digit + 4 px border.
    "uae_20x20": dict(max_angle=10.0, max_shift=10.0, n_angles=11, n_shifts=5, shrink="20x20",
                      mass_tolerance=0.1),
}



class SpatialGrid(Attack):
    """Worst-case rotation + translation from a grid (or from k random draws) per example.

    Every candidate transform of every image is evaluated (batched over images and
    transforms, forward passes only, no gradients; with ``early_stop`` an image's remaining
    candidates are skipped once one fooled it). Per example the attack returns, among the
    misclassified transforms, the one with the highest cross-entropy (``select="loss"``) or
    the most confident wrong answer, the one whose largest logit is highest
    (``select="confidence"``: what accuracy at 80% coverage ranks by); if no candidate
    misclassifies, the highest-cross-entropy candidate (closest to flipping; ``success`` is
    then False). Whether an image is fooled never depends on ``select``. The identity
    (0 deg, 0 px, 0 px) is part of every grid with odd value counts, so on the UAE presets the
    unmoved bordered image is always a candidate. With a mass check, disallowed candidates are
    skipped (never queried, never returned); if none is allowed the identity of the bordered
    image is returned.

    Shape:
        images (N, 1, 28, 28) float in [0, 1]; labels (N,) int64; output same as images.
        ``result.info``: ``angle`` (N,) degrees, ``dx``, ``dy`` (N,) pixels of the returned
        transform; ``spatial_transform(images, angle, dx, dy, shrink)`` reproduces the output.

    Args:
        preset: ``"engstrom"``, ``"uae_warmup"`` (the warm-up kit's transform, see the
            module docstring), ``"uae_20x20"`` (the same grid on a 20 x 20 digit) or None
            (= engstrom values as defaults); explicitly given arguments override the preset's.
        max_angle: largest rotation in degrees, in [0, 180]; angles span [-max, max].
        max_shift: largest shift in pixels, in [0, 28]; dx and dy span [-max, max].
        n_angles: grid values of the angle, >= 1 (1 = only 0 degrees).
        n_shifts: grid values of dx and of dy each, >= 1 (1 = only 0 px).
        mode: ``"grid"`` (exhaustive, n_shifts^2 * n_angles transforms) or ``"random"``
            (worst of ``k`` transforms drawn uniformly from the ranges per example).
        k: random draws per example in random mode, >= 1.
        shrink: the border before transforming: ``"none"``, ``"kit"`` (the warm-up kit's:
            TF1 bilinear resize to 24 x 24, 2 px black border, :func:`kit_border`) or
            ``"20x20"`` (antialiased resize to 20 x 20, 4 px border); True = ``"20x20"``,
            False = ``"none"``.
        mass_tolerance: allow a transform only if |mass after - mass before| < tol * mass
            before (mass = sum of intensities of the bordered image before and after the
            warp; an image whose mass does not change at all is always allowed); None = no
            check.
        eval_batch: warped images per forward pass (memory bound), >= 1.
        early_stop: evaluate the candidates in blocks (about ``eval_batch`` warped images per
            block, in grid order) and stop evaluating an image once a block has fooled it.
            Whether an image is fooled is exactly what the exhaustive search finds (it is
            fooled iff some candidate misclassifies it); the returned transform is then the
            highest-loss fooling transform *within the blocks evaluated* rather than over the
            whole grid, and ``queries`` counts only the candidates evaluated. Default False
            (the exhaustive search); the evaluation configs keep it False with
            ``select="confidence"``.
        select: ``"loss"`` or ``"confidence"``: which fooling transform is returned (above).
        batch_size, progress, seed: see :class:`~advdefense.attacks.base.Attack`.
    """

    name = "spatial"

    def __init__(self, preset: str | None = "engstrom", max_angle: float | None = None,
                 max_shift: float | None = None, n_angles: int | None = None,
                 n_shifts: int | None = None, mode: str = "grid", k: int = 10,
                 shrink: str | bool | None = None, mass_tolerance: float | None = None,
                 eval_batch: int = 4096, early_stop: bool = False, select: str = "loss",
                 batch_size: int = 256, progress: bool = False, seed: int = 0) -> None:
        super().__init__(batch_size, progress, seed)
        self.early_stop = bool(early_stop)
        check_choice("attack.select", select, list(SELECT))
        self.select = select
        check_choice("attack.preset", preset, [None, *PRESETS])
        given = dict(max_angle=max_angle, max_shift=max_shift, n_angles=n_angles,
                     n_shifts=n_shifts, shrink=shrink, mass_tolerance=mass_tolerance)
        cfg = {**PRESETS[preset or "engstrom"], **{k_: v for k_, v in given.items()
                                                    if v is not None}}
        check_range("attack.max_angle", cfg["max_angle"], 0.0, 180.0)
        check_range("attack.max_shift", cfg["max_shift"], 0.0, 28.0)
        self.max_angle, self.max_shift = float(cfg["max_angle"]), float(cfg["max_shift"])
        self.n_angles = check_int("attack.n_angles", cfg["n_angles"])
        self.n_shifts = check_int("attack.n_shifts", cfg["n_shifts"])
        check_choice("attack.mode", mode, ["grid", "random"])
        self.mode, self.k = mode, check_int("attack.k", k)
        self.shrink = check_shrink(cfg["shrink"])
        tol = cfg["mass_tolerance"]
        if tol is not None:
            check_range("attack.mass_tolerance", tol, 0.0, None, lo_open=True)
        self.mass_tolerance = None if tol is None else float(tol)
        self.eval_batch = check_int("attack.eval_batch", eval_batch)
        self._grids: dict[tuple, torch.Tensor] = {}

    @property
    def threat_model(self) -> ThreatModel:
        """The rotation/shift set, query access (grid search: forward passes only; the budget
        is an upper bound: every transform plus one)."""
        preset = next((name for name, p in PRESETS.items() if p["max_angle"] == self.max_angle
                       and p["max_shift"] == self.max_shift and p["shrink"] == self.shrink), None)
        tries = self.n_angles * self.n_shifts ** 2 if self.mode == "grid" else self.k
        return ThreatModel(Spatial(self.max_angle, self.max_shift, self.shrink, preset),
                           Queries(tries + 1))

    def grid(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(T, 3) grid of (angle deg, dx px, dy px); angle outermost, then dx, then dy."""
        def values(lim: float, n: int) -> torch.Tensor:
            return torch.linspace(-lim, lim, n, device=device) if n > 1 else torch.zeros(
                1, device=device)

        a, x, y = torch.meshgrid(values(self.max_angle, self.n_angles),
                                 values(self.max_shift, self.n_shifts),
                                 values(self.max_shift, self.n_shifts), indexing="ij")
        return torch.stack([a.flatten(), x.flatten(), y.flatten()], 1)

    def transform(self, images: torch.Tensor, angle: torch.Tensor | float,
                  dx: torch.Tensor | float, dy: torch.Tensor | float) -> torch.Tensor:
        """Apply this attack's transform (with its border) to ``images``."""
        return spatial_transform(images, angle, dx, dy, shrink=self.shrink)

    def border(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` with this attack's border (:func:`add_border`): the identity candidate
        and the ``before`` of the mass check."""
        return add_border(images, self.shrink)

    def allowed(self, before: torch.Tensor, after: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """(N,) bool: the mass check between (N, 1, H, W) images before and after warping.

        With ``repeat`` = b, ``after`` holds b transform-major blocks of the N' images in
        ``before`` (N = b N'), as :meth:`_score_grid` produces them.
        """
        if self.mass_tolerance is None:
            return torch.ones(after.shape[0], dtype=torch.bool, device=before.device)
        m0, m1 = before.sum((1, 2, 3)).repeat(repeat), after.sum((1, 2, 3))
        diff = (m1 - m0).abs()
        return (diff < self.mass_tolerance * m0) | (diff == 0)

    def _candidates(self, n: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
        """(n, T, 3) candidate (angle, dx, dy) per example."""
        if self.mode == "grid":
            g = self.grid(device)
            return g.unsqueeze(0).expand(n, *g.shape)
        u = torch.rand((n, self.k, 3), generator=generator, device=device) * 2 - 1
        lim = torch.tensor([self.max_angle, self.max_shift, self.max_shift], device=device)
        return u * lim

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator, need_success: bool = True) -> AttackResult:
        n, dev = images.shape[0], images.device
        base = self.border(images)
        cand = self._candidates(n, dev, generator)
        best_s = torch.zeros(n, dtype=torch.bool, device=dev)
        best_score = torch.full((n,), float("-inf"), device=dev)
        best_idx = torch.full((n,), -1, dtype=torch.int64, device=dev)
        queries = torch.zeros(n, dtype=torch.int64, device=dev)
        rows = torch.arange(n, device=dev)
        grids = self.sampling_grids(base) if self.mode == "grid" else None
        t0, total = 0, cand.shape[1]
        while t0 < total:
            if self.early_stop:
                rows = rows[~best_s[rows]]
                if rows.numel() == 0:
                    break
            # transforms per block: a block's forward batch is about eval_batch images, so
            # blocks grow as fooled images leave (early stop)
            per = max(1, self.eval_batch // max(rows.numel(), 1))
            if self.mode == "grid":  # the same transforms for every row: precomputed grids
                succ, score, ok = self._score_grid(model, base[rows], labels[rows],
                                                   grids[t0:t0 + per])
            else:
                succ, score, ok = self._score(model, base[rows], labels[rows],
                                              cand[rows, t0:t0 + per])
            queries[rows] += ok.sum(1)
            has = succ.any(1)
            j = torch.where(has, score.masked_fill(~succ, float("-inf")).argmax(1),
                            score.argmax(1))
            block_score = score.gather(1, j[:, None]).squeeze(1)
            better = improves(has, block_score, best_s[rows], best_score[rows]) & \
                block_score.isfinite()
            best_idx[rows] = torch.where(better, t0 + j, best_idx[rows])
            best_s[rows] = best_s[rows] | (better & has)
            best_score[rows] = torch.where(better, block_score, best_score[rows])
            t0 += per
        chosen = cand[torch.arange(n, device=dev), best_idx.clamp(min=0)]
        chosen = chosen.masked_fill((best_idx < 0)[:, None], 0.0)
        angle, dx, dy = chosen.unbind(1)
        out = warp(base, angle, dx, dy)
        success = None
        if need_success:
            with torch.no_grad():
                success = model(out).argmax(1) != labels
        return AttackResult(out, success, queries, {"angle": angle, "dx": dx, "dy": dy})

    def sampling_grids(self, like: torch.Tensor) -> torch.Tensor:
        """(T, H, W, 2) sampling grids of :meth:`grid`, cached per device, dtype and grid."""
        key = (like.device, like.dtype, tuple(like.shape[-2:]), self.max_angle,
               self.max_shift, self.n_angles, self.n_shifts)
        if key not in self._grids:
            self._grids.clear()  # one grid at a time (about 5 MB for the engstrom grid)
            self._grids[key] = sampling_grids(self.grid(), like.shape[-2:], like.dtype,
                                              like.device)
        return self._grids[key]

    def _score_grid(self, model: nn.Module, base: torch.Tensor, labels: torch.Tensor,
                    grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_score` for the same b transforms (their grids (b, H, W, 2)) on every row."""
        n, b = base.shape[0], grids.shape[0]
        # (b, n, H, W) transform-major -> (b n, 1, H, W), no copy
        flat = warp_many(base, grids).view(b * n, 1, *base.shape[-2:])
        ok = self.allowed(base, flat, b)
        succ, score = _score_where_allowed(model, flat, labels.repeat(b), ok, self.select)
        return succ.view(b, n).T, score.view(b, n).T, ok.view(b, n).T

    def _score(self, model: nn.Module, base: torch.Tensor, labels: torch.Tensor,
               cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Misclassified, score (:func:`~advdefense.attacks.base.selection_score` of the
        cross-entropy; -inf where disallowed) and allowed, each (n, b)."""
        n, b = cand.shape[:2]
        flat = cand.reshape(-1, 3)
        src = base.repeat_interleave(b, 0)
        warped = warp(src, flat[:, 0], flat[:, 1], flat[:, 2])
        ok = self.allowed(src, warped)
        succ, score = _score_where_allowed(model, warped, labels.repeat_interleave(b), ok,
                                           self.select)
        return succ.view(n, b), score.view(n, b), ok.view(n, b)


def _score_where_allowed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ok: torch.Tensor,
                         select: str = "loss") -> tuple[torch.Tensor, torch.Tensor]:
    """Misclassified and score per image of x (M, 1, H, W): the cross-entropy, or with
    ``select="confidence"`` the largest logit where misclassified. Only allowed images
    (``ok``, (M,) bool) are forwarded, the others get False and -inf."""
    score = torch.full((x.shape[0],), float("-inf"), device=x.device)
    succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if bool(ok.all()):
        logits = _forward(model, x)
        fooled = logits.argmax(1) != y
        loss = nn.functional.cross_entropy(logits, y, reduction="none")
        return fooled, selection_score(select, fooled, loss, logits)
    if bool(ok.any()):
        logits = _forward(model, x[ok])
        fooled = logits.argmax(1) != y[ok]
        loss = nn.functional.cross_entropy(logits, y[ok], reduction="none")
        score[ok] = selection_score(select, fooled, loss, logits)
        succ[ok] = fooled
    return succ, score


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(channels_last(x)).float()
