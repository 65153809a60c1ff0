"""Sweeps for the plots and the sanity checks, on a (smaller) subset.

* eps sweep: accuracy vs eps for FGSM and PGD (``attack_at_eps(eps)`` builds the attack),
  under the given threat models. It runs through the same cached :class:`Grid` as the main
  grid, so eps = 0 is a real attack call (not a shortcut) and reruns are free.
* spatial sweep: accuracy under one fixed rotation (degrees about the centre, positive =
  counterclockwise as displayed) or one fixed shift (pixels; ``dx`` right, ``dy`` down), zero
  padding, bilinear sampling: the spatial attack's own warp
  (:func:`advdefense.attacks.geometry.spatial_transform`, no border).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from advdefense.attacks.geometry import spatial_transform
from advdefense.evaluation.cells import Cell
from advdefense.evaluation.grid import Grid
from advdefense.evaluation.threats import CLEAN, AttackSpec, EvalModel, predict_logits


def eps_sweep(grid: Grid, models: Sequence[EvalModel],
              factories: dict[str, tuple[Callable[[float], Any], dict[str, Any]]],
              eps_values: Sequence[float], threats: Sequence[str],
              progress: bool = True) -> list[dict[str, Any]]:
    """Rows ``{model, attack, method, threat, eps, accuracy, n}``; eps ``None`` = clean images
    (``method``: the attack's family, what the sanity checks dispatch on).

    Args:
        grid: a grid over the sweep subset.
        factories: attack name -> (eps -> attack, base config for the cache key).
        eps_values: L-infinity radii in [0, 1].
        threats: 'whitebox' and/or 'transfer'.
    """
    from tqdm.auto import tqdm

    jobs = [(m, name, t, e) for t in threats for name in factories for e in eps_values
            for m in models]
    rows = []
    for m in models:
        rec = grid.cell(m, AttackSpec(CLEAN, None), "whitebox")
        rows.append(_row(rec, "clean", "any", None))
    built: dict[tuple[str, float], Any] = {}  # one attack object per (attack, eps)
    for m, name, threat, eps in tqdm(jobs, desc="eps sweep", unit="cell", disable=not progress):
        make, config = factories[name]
        if (name, float(eps)) not in built:
            built[(name, float(eps))] = make(float(eps))
        spec = AttackSpec(f"{name}@{eps:g}", built[(name, float(eps))],
                          config | {"eps": float(eps)}, (threat,))
        rows.append(_row(grid.cell(m, spec, threat), name, threat, float(eps)))
    return rows


def _row(cell: Cell, attack: str, threat: str, eps: float | None) -> dict[str, Any]:
    correct = int(cell.correct.sum())
    return {"model": cell.model, "attack": attack, "method": cell.method, "threat": threat,
            "eps": eps, "accuracy": correct / max(cell.n, 1), "n": cell.n}


def spatial_sweep(models: Sequence[EvalModel], images: torch.Tensor, labels: torch.Tensor,
                  angles: Sequence[float], shifts: Sequence[float]) -> list[dict[str, Any]]:
    """Rows ``{model, kind: 'angle'|'dx'|'dy', value, accuracy, n}`` (forward passes only)."""
    points = [("angle", float(a), spatial_transform(images, a, 0.0, 0.0)) for a in angles]
    points += [("dx", float(s), spatial_transform(images, 0.0, s, 0.0)) for s in shifts]
    points += [("dy", float(s), spatial_transform(images, 0.0, 0.0, s)) for s in shifts]
    rows = []
    for m in models:
        for kind, value, x in points:
            pred = predict_logits(m.module, x).argmax(1)
            rows.append({"model": m.name, "kind": kind, "value": value, "n": len(labels),
                         "accuracy": float((pred == labels).double().mean())})
    return rows
