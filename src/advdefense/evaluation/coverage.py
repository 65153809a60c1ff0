"""Which images a worst case covers when some of its cells were completed by a cascade.

A cell covers all evaluated images (``index`` None) or the positions in its ``index`` (a
budgeted cell, :mod:`advdefense.evaluation.grid`). A cell completed by a cascade
(:mod:`advdefense.evaluation.cascade_worst`) also has a ``target``: the images it answers for,
of which it covers those still robust when its turn came.

The worst case covers the images in every cell's target (a cell without one: its positions),
minus any image where some cell did not run and no cell fooled it: an image is counted only
where every combined attack ran on it or it is broken anyway. Without targets that is the
intersection of the positions (:func:`advdefense.evaluation.cells.aligned`, which
:func:`advdefense.evaluation.worst_case.worst_case` uses then); with a cascade it is the whole
target, since the cascade skipped only images already broken.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from advdefense.evaluation.cells import Cell


def covered(cells: Sequence[Cell]) -> tuple[list[int], torch.Tensor, torch.Tensor,
                                            torch.Tensor, torch.Tensor]:
    """The covered images and the cells' predictions on them.

    Returns:
        ``(index, labels, pred, conf, ran)``: ``index`` the sorted positions covered,
        ``labels`` (K,) int64 at them, ``pred`` (A, K) int64 (-1 where a cell did not run),
        ``conf`` (A, K) float64 (0 there), ``ran`` (A, K) bool.
    """
    full = next((c.n for c in cells if c.index is None), None)
    universe = sorted(set(range(full)) if full is not None else
                      {p for c in cells for p in (*c.positions, *(c.target or ()))})
    col = {p: i for i, p in enumerate(universe)}
    u = len(universe)
    labels = torch.full((u,), -1, dtype=torch.long)
    pred = torch.full((len(cells), u), -1, dtype=torch.long)
    conf = torch.zeros((len(cells), u), dtype=torch.double)
    keep = torch.ones(u, dtype=torch.bool)
    for a, c in enumerate(cells):
        pos = torch.tensor([col[p] for p in c.positions], dtype=torch.long)
        labels[pos] = torch.tensor(c.labels, dtype=torch.long)
        pred[a, pos] = torch.tensor(c.pred, dtype=torch.long)
        conf[a, pos] = torch.tensor(c.conf, dtype=torch.double)
        scope = torch.zeros(u, dtype=torch.bool)
        scope[torch.tensor([col[p] for p in (c.positions if c.target is None else c.target)],
                           dtype=torch.long)] = True
        keep &= scope
    ran = pred >= 0
    broken = (ran & (pred != labels[None, :])).any(0)
    keep &= ran.all(0) | broken
    at = keep.nonzero().squeeze(1)
    return [universe[i] for i in at.tolist()], labels[at], pred[:, at], conf[:, at], ran[:, at]
