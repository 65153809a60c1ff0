"""Convergence runs: would a larger budget have found more adversarial examples?

For every white-box grid cell whose attack can be rescaled (``attack.scaled(steps, restarts,
seed)``: APGD and the ``autoattack`` cascade), on up to ``n`` of the cell's images (a
stratified subset, seeded) this reruns the attack with doubled iterations, and with as many
extra restarts again from fresh random starts, on the images the cell left robust. An image
counts as broken by the larger budget if either the cell's attack or the rerun fooled it (the
per-example worst case, as restarts are taken), so the accuracy can only drop. The sanity check
:func:`advdefense.evaluation.sanity.convergence_checks` flags the row when it drops by ``tol``
or more.

Runs are cached like cells (keyed by the cell's own key, which holds the code version).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from advdefense.evaluation.cache import CellCache, cell_key
from advdefense.evaluation.cells import Cell
from advdefense.evaluation.threats import AttackSpec, EvalModel, attackable, predict_logits
from advdefense.sampling import stratified_sample

# the doubled-restarts rerun draws its starts from seed + RESEED (never one of the cell's own)
RESEED = 10_007


def _positions(cell: Cell, n: int, seed: int) -> torch.Tensor:
    """Positions in the cell's lists of a stratified subset of at most ``n`` of its images."""
    return stratified_sample(torch.tensor(cell.labels, dtype=torch.long), n, seed)


def convergence_runs(models: Sequence[EvalModel], attacks: Sequence[AttackSpec],
                     cells: Sequence[Cell], images: torch.Tensor, cache: CellCache,
                     n: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """One result per white-box cell of a rescalable attack (see the module docstring).

    Args:
        models, attacks: the grid's models and attack specs.
        cells: the grid's cells (labels, predictions, ``index``, ``key``).
        images: (N, 1, 28, 28) in [0, 1], the evaluated images.
        cache: where runs are stored; n: most images per run; seed: subset seed.

    Returns:
        ``{"model", "attack", "n", "accuracy", "accuracy_steps", "accuracy_restarts"}`` per
        cell: the cell's accuracy on the subset, then with doubled iterations, then with doubled
        restarts (each the per-example worst with the cell's own result).
    """
    by_model = {m.name: m for m in models}
    rescalable = {s.name: s for s in attacks if hasattr(s.attack, "scaled")}
    out = []
    for cell in cells:
        spec, model = rescalable.get(cell.attack), by_model.get(cell.model)
        if cell.threat != "whitebox" or spec is None or model is None:
            continue
        key = cell_key({"convergence": cell.key, "n": int(n), "seed": int(seed)})
        result = cache.get(key)
        if result is None:
            result = _run(model, spec, cell, images, n, seed)
            cache.put(key, result)
        out.append(result | {"model": model.name, "attack": spec.name})  # keyed by weights
    return out


def _run(model: EvalModel, spec: AttackSpec, cell: Cell, images: torch.Tensor, n: int,
         seed: int) -> dict[str, Any]:
    pos = _positions(cell, n, seed)
    index = torch.tensor(cell.positions, dtype=torch.long)[pos]
    x = images[index.to(images.device)]
    y = torch.tensor(cell.labels, dtype=torch.long)[pos].to(images.device)
    robust = cell.correct[pos].to(y.device)
    accuracy = {"accuracy": robust}
    target = attackable(model.module)
    for name, bigger in (("accuracy_steps", spec.attack.scaled(steps=2)),
                         ("accuracy_restarts", spec.attack.scaled(seed=RESEED))):
        still = robust.clone()
        idx = robust.nonzero().squeeze(1)
        if idx.numel():
            adv = bigger(target, x[idx], y[idx])
            still[idx] = predict_logits(model.module, adv).argmax(1) == y[idx]
        accuracy[name] = still
    return {"model": model.name, "attack": spec.name, "n": len(y)} | {
        k: float(v.double().mean()) if len(y) else 1.0 for k, v in accuracy.items()}
