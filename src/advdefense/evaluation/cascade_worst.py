"""Worst cases of full-n models, completed with a cascade (AutoAttack's scheme, issue 14 C).

A model of ``eval.full_n`` (:mod:`advdefense.evaluation.budget`) runs its listed rows on all n
images; its other rows keep the time budget and cover a nested prefix. Its worst case must
still cover all n, without paying every row on every image: the scheme of
:class:`advdefense.attacks.cascade.Cascade` (each attack runs only on the images no earlier
attack fooled), applied row by row so that every completed cell is cached and the budget cells
already computed are reused:

* per threat model (white-box, black-box; transfer rows cover all n already), each budgeted
  headline row (:func:`advdefense.evaluation.worst_case.in_headline`) is completed in turn:
  dense rows (L-inf, spatial) first, then L0 rows, in the configured order;
* a row's *target* is the images it would cover as a full-n row (all n; for a black-box,
  query-only, row ``query_n`` stratified images, :meth:`Budget.full_k`);
* it is crafted on the images of its target outside its own budget prefix that are still
  robust: no cell of the same threat model that the row's worst cases combine (the dense
  rows for a dense row, every headline row for an L0 row, the clean row always) fooled them.

The completed cell (the budget cell plus the completion, ``target`` set) goes only into the
worst cases; the row shown in the report keeps its budget and its n. A worst case over cells
with targets (:func:`advdefense.evaluation.worst_case.worst_case`) covers the images of every
target, where each combined attack either ran or an attack it is combined with already broke
the image: so the dense and the headline white-box worst cases cover all n, and a worst case
that takes a query-only row covers that row's n.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from advdefense.evaluation.budget import Budget
from advdefense.evaluation.cells import Cell
from advdefense.evaluation.threats import AttackSpec, EvalModel
from advdefense.evaluation.worst_case import WORST_CASES, add_worst_cases, in_headline, is_dense

if TYPE_CHECKING:
    from advdefense.evaluation.grid import Grid

Summary = dict[str, dict[str, dict[str, int]]]


def still_robust(cells: Sequence[Cell], n: int) -> torch.Tensor:
    """(n,) bool: no cell (each covering all n or its ``index``) fooled the image."""
    fooled = torch.zeros(n, dtype=torch.bool)
    for c in cells:
        pos = torch.tensor(c.positions, dtype=torch.long)
        fooled[pos] |= ~c.correct
    return ~fooled


def merge(cell: Cell, extra: Cell | None, target: list[int]) -> Cell:
    """``cell`` (a budget cell) with ``extra`` (its completion, disjoint images) and ``target``."""
    parts = [cell] if extra is None else [cell, extra]
    by_pos = {p: (c, i) for c in parts for i, p in enumerate(c.positions)}
    index = sorted(by_pos)

    def pick(attr: str) -> list[Any] | None:
        if getattr(cell, attr) is None:
            return None
        return [getattr(by_pos[p][0], attr)[by_pos[p][1]] for p in index]

    seconds = cell.seconds + (0.0 if extra is None else extra.seconds)
    return replace(cell, labels=pick("labels"), pred=pick("pred"), conf=pick("conf"),
                   l0=pick("l0"), index=index, target=list(target), seconds=round(seconds, 3),
                   key="")


def complete(grid: Grid, models: Sequence[EvalModel], attacks: Sequence[AttackSpec],
             cells: Sequence[Cell], budget: Budget) -> tuple[list[Cell], Summary]:
    """``cells`` with the budget cells of full-n models completed (see the module docstring).

    Returns ``(cells, summary)``: the cells for the worst cases, and per full-n model and
    threat, the rows completed and on how many more images each was crafted.
    """
    out = list(cells)
    summary: Summary = defaultdict(dict)
    if budget.full_n is None or not budget.full_n.cascade or not budget.attack_n:
        return out, {}
    specs = {s.name: s for s in attacks if s.attack is not None}
    n = len(grid.labels)
    order = [s.name for s in attacks]
    for model in models:
        if not budget.is_full(model.name):
            continue
        for threat in dict.fromkeys(c.threat for c in cells if c.model == model.name):
            if threat == "transfer":
                continue
            at = [i for i, c in enumerate(out) if c.model == model.name and c.threat == threat
                  and c.method not in WORST_CASES and in_headline(c.threat_model)]
            todo = sorted((i for i in at if out[i].index is not None and out[i].attack in specs),
                          key=lambda i: (not is_dense(out[i].threat_model),
                                         order.index(out[i].attack)))
            done: dict[str, int] = {}
            for i in todo:
                cell = out[i]
                spec = specs[cell.attack]
                k = budget.full_k(spec.name, threat)
                target = list(range(n)) if k is None or k >= n or grid.order is None else \
                    sorted(grid.order[:k].tolist())
                have = set(cell.positions)
                if have.issuperset(target):  # a full-n row: nothing to complete
                    continue
                dense = is_dense(cell.threat_model)
                family = [out[j] for j in at if j != i and (not dense or is_dense(out[j].threat_model))]
                robust = still_robust(family, n)
                left = [p for p in target if p not in have and bool(robust[p])]
                extra = None
                if left:
                    extra = grid.cell_at(model, spec, threat, torch.tensor(left, dtype=torch.long))
                out[i] = merge(cell, extra, target)
                done[spec.name] = len(left)
            if done:
                summary[model.name][threat] = done
    return out, dict(summary)


def worst_cases(grid: Grid, models: Sequence[EvalModel], attacks: Sequence[AttackSpec],
                cells: Sequence[Cell], budget: Budget) -> tuple[list[Cell], dict[str, Any]]:
    """``cells`` plus their worst-case cells, those of full-n models completed by
    :func:`complete`. Returns ``(cells, summary)``: ``summary["cascade"]`` is
    :func:`complete`'s, ``summary["worst_case_n"]`` the n of each full-n model's worst cases
    (``{model: {"<attack>/<threat>": n}}``)."""
    completed, summary = complete(grid, models, attacks, cells, budget)
    worst = [c for c in add_worst_cases(completed)[len(completed):] if c.method in WORST_CASES]
    ns: dict[str, dict[str, int]] = defaultdict(dict)
    for w in worst:
        if budget.is_full(w.model):
            ns[w.model][f"{w.attack}/{w.threat}"] = w.n
        threats = summary.get(w.model, {})
        done = threats if w.threat == "all" else {w.threat: threats.get(w.threat)}
        done = {t: d for t, d in done.items() if d}
        if done:
            w.info = w.info | {"cascade": done}
    return list(cells) + worst, {"cascade": summary, "worst_case_n": dict(ns)}
