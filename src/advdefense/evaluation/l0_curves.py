"""Sparse (L0) attacks by pixel budget, from the grid's cell records; runs no model.

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

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

BUDGETS: tuple[int, ...] = (5, 10, 20, 40, 78)


def l0_curves(records: Iterable[dict[str, Any]], labels: torch.Tensor,
              attacks: Iterable[str] | Mapping[str, int],
              threats: Sequence[str] = ("whitebox", "blackbox")) -> list[dict[str, Any]]:
    """One curve record per cell of a sparse attack.

    Args:
        records: grid cell records (``pred`` and ``l0``: N ints each; ``index`` where budgeted).
        labels: (N,) int64 in {0, 1}, the evaluated images' labels.
        attacks: names of the L0 attack rows (those whose declared threat model is L0), or a
            mapping of them to their pixel budgets (then each curve records its ``k``).
        threats: threat models to keep (transfer rows are crafted on another model).
    """
    budgets = dict(attacks) if isinstance(attacks, Mapping) else {}
    names, labels = set(attacks), labels.cpu()
    out = []
    for r in records:
        if r["attack"] not in names or r["threat"] not in threats or "l0" not in r:
            continue
        # a budgeted record's lists run over its own ``index`` (positions into labels)
        y = labels if r.get("index") is None else labels[torch.tensor(r["index"], dtype=torch.long)]
        pred, l0 = (torch.tensor(r[k], dtype=torch.long) for k in ("pred", "l0"))
        if len(pred) != len(y) or len(l0) != len(y):
            raise ValueError(f"cell {r['model']}/{r['attack']}/{r['threat']}: {len(pred)} "
                             f"predictions and {len(l0)} L0 values for {len(y)} images")
        fooled = l0[pred != y].sort().values
        k = {"k": int(budgets[r["attack"]])} if r["attack"] in budgets else {}
        out.append({"model": r["model"], "attack": r["attack"], "threat": r["threat"],
                    "n": len(y), "fooled_l0": fooled.tolist()} | k)
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
