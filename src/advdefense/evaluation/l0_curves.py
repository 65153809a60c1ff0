"""Sparse (L0) attacks by pixel budget, from the grid's cell records; runs no model.

Runs on :class:`advdefense.evaluation.cells.Cell` (their labels, predictions and ``l0``).

A sparse attack's row says how often it fooled a model, whatever number of pixels it changed.
The query-only local search has no pixel budget at all (it stops at its query budget), so a
success may have changed enough pixels to make a different digit. The curve below separates the
two: at budget ``k``, an image counts as robust unless the attack fooled the model by changing
at most ``k`` pixels (``accuracy(k) = 1 - #{fooled with l0 <= k} / n``). It only ever credits
the model with images the attack itself could not break within ``k`` pixels: an attack run at a
larger budget is not a stronger attack at ``k``, so the curve is an upper bound of robust
accuracy at ``k`` for that attack's search, not a certificate. It is a diagnostic only: accuracy
at a budget ``k`` is read off the rows of attacks run *with* budget ``k`` (e.g. ``jsma_k20``,
``sparse_rs_k20``), never off a larger-budget run that happened to land within ``k``.

A curve record::

    {"model", "attack", "threat", "n", "fooled_l0": [sorted ints: changed pixels of each success],
     "k": the attack's declared pixel budget (784: none), where known}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from advdefense.evaluation.cells import Cell

BUDGETS: tuple[int, ...] = (5, 10, 20, 40, 78)


def l0_curves(cells: Iterable[Cell],
              threats: Sequence[str] = ("whitebox", "blackbox")) -> list[dict[str, Any]]:
    """One curve record per cell of a sparse attack (declared L0 threat model).

    Args:
        cells: grid cells (labels, predictions and ``l0`` on the images each covers).
        threats: threat models to keep (transfer rows are crafted on another model).
    """
    out = []
    for c in cells:
        tm = c.threat_model
        if tm is None or tm.l0 is None or c.threat not in threats or c.l0 is None:
            continue
        fooled = torch.tensor(c.l0, dtype=torch.long)[~c.correct].sort().values
        out.append({"model": c.model, "attack": c.attack, "threat": c.threat, "n": c.n,
                    "fooled_l0": fooled.tolist(), "k": int(tm.l0.k)})
    return out


def accuracy_at(curve: dict[str, Any], k: int | None) -> float:
    """Accuracy at pixel budget ``k`` (``None``: any number of pixels, the row's accuracy)."""
    fooled = curve["fooled_l0"]
    hit = len(fooled) if k is None else sum(1 for v in fooled if v <= k)
    return 1.0 - hit / curve["n"] if curve["n"] else float("nan")


def median_l0(curve: dict[str, Any]) -> float | None:
    """Median changed pixels over the attack's successes (None if it never succeeded)."""
    fooled = curve["fooled_l0"]
    return float(torch.tensor(fooled, dtype=torch.double).median()) if fooled else None
