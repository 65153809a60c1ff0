"""The evaluation grid: every model x every attack x every threat model, cell by cell.

Each cell is an :class:`advdefense.evaluation.cells.Cell` (its JSON record form lives in
that module). Cells are cached on disk (see :mod:`advdefense.evaluation.cache`), so the grid can
be killed and resumed, and a rerun recomputes nothing. Every attack runs on every point of its
row: the per-attack rows are never computed on a subset filtered by another attack's outcome.

Budgeted attacks (``attack_n``): an attack crafted against each model (white-box, black-box)
may be limited to the first ``k`` images of one seeded, stratified, *nested* order of the
evaluated images (:func:`advdefense.sampling.stratified_sample`, ``nested=True``), so every smaller
subset lies inside every larger one.
Such a cell has ``n = k`` and ``index``: the positions (into the evaluated images) it
covers. Transfer rows and the clean row always use every image. Worst cases are taken on the
images every combined cell covers (see :mod:`advdefense.evaluation.worst_case`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from advdefense.evaluation.budget import Budget, as_budget
from advdefense.evaluation.cache import CellCache, cell_key, code_version
from advdefense.evaluation.cells import Cell, spec_identity
from advdefense.evaluation.threats import (
    CLEAN,
    AttackSpec,
    EvalModel,
    attackable,
    craft,
    predict_logits,
)
from advdefense.sampling import stratified_sample


class MissingSurrogateError(RuntimeError):
    """The transfer threat model needs a surrogate model that is not in the registry."""


def _key(model: EvalModel, spec: AttackSpec, threat: str, surrogate: EvalModel | None,
         subset_id: str, k: int | None = None) -> str:
    threat_part = "any" if spec.attack is None else threat
    parts = {"model": model.digest, "attack": spec.name, "config": spec.config,
             "threat": threat_part, "subset": subset_id, "v": code_version()}
    if k is not None:
        parts["k"] = int(k)
    if threat == "transfer" and spec.attack is not None and surrogate is not None:
        parts["surrogate"] = surrogate.digest
    return cell_key(parts)


def changed_pixels(images: torch.Tensor, adv: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Pixels (N,) int64 where ``adv`` differs from ``images`` by more than ``tol`` (L0)."""
    return ((adv.detach() - images.to(adv.device)).abs() > tol).flatten(1).sum(1).cpu()


def _examples(adv: torch.Tensor, k: int) -> dict[str, Any]:
    """The first ``k`` adversarial images, flattened and rounded, for the example plots."""
    k = min(k, len(adv))
    flat = adv[:k].reshape(k, 28 * 28)
    return {"index": list(range(k)), "adv": [[round(float(v), 4) for v in row] for row in flat]}


class Grid:
    """Runs and caches cells over fixed images/labels.

    Args:
        images: (N, 1, 28, 28) float in [0, 1], the evaluated subset.
        labels: (N,) int64 in {0, 1}.
        cache: the cell cache.
        subset_id: string identifying the subset (part of every key).
        surrogate: the transfer surrogate, or None if no transfer threat is run.
        n_examples: adversarial examples kept per cell for plots.
        attack_n: attack row name -> the most images it is crafted on against each model
            (white-box / black-box); absent or None = all. See the module docstring. A
            :class:`~advdefense.evaluation.budget.Budget` may also exempt some models' rows
            (``eval.full_n``).
        seed: seed of the nested subset order.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cache: CellCache,
                 subset_id: str, surrogate: EvalModel | None = None, n_examples: int = 4,
                 attack_n: dict[str, int | None] | Budget | None = None, seed: int = 0) -> None:
        self.images, self.labels, self.cache = images, labels, cache
        self.subset_id, self.surrogate, self.n_examples = subset_id, surrogate, n_examples
        self.budget = as_budget(attack_n, len(labels) + 1)
        self.attack_n = dict(self.budget.attack_n)
        # the plotted images (positions < n_examples) lead the order, so every subset holds them
        self._order = stratified_sample(labels, seed=seed, nested=True, first=n_examples,
                                        rng="torch", ties="position") if self.attack_n else None
        self._transfer: dict[str, torch.Tensor] = {}
        self._attackable: dict[str, nn.Module] = {}
        self._clean: dict[str, Cell] = {}
        self.attack_calls = 0

    def transfer_images(self, spec: AttackSpec) -> torch.Tensor:
        """Adversarial images crafted once on the surrogate (memoized and cached on disk)."""
        if self.surrogate is None:
            raise MissingSurrogateError("the transfer threat needs a surrogate model")
        if spec.name in self._transfer:
            return self._transfer[spec.name]
        key = cell_key({"transfer": spec.name, "config": spec.config, "subset": self.subset_id,
                        "surrogate": self.surrogate.digest, "v": code_version()})
        adv = self.cache.get_tensor(key)
        if adv is not None:
            adv = adv.to(self.images.device)
        if adv is None or adv.shape != self.images.shape:
            self.attack_calls += 1
            adv, _ = craft(spec, attackable(self.surrogate.module), self.images, self.labels)
            self.cache.put_tensor(key, adv)
        self._transfer[spec.name] = adv
        return adv

    def _attack_model(self, model: EvalModel) -> nn.Module:
        if model.name not in self._attackable:
            self._attackable[model.name] = attackable(model.module)
        return self._attackable[model.name]

    @property
    def order(self) -> torch.Tensor | None:
        """The nested stratified order of the images (None without a budget)."""
        return self._order

    def subset(self, spec: AttackSpec, threat: str, model: str = "") -> torch.Tensor | None:
        """Sorted positions a budgeted cell (of ``model``) runs on, or None for all images."""
        k = self.budget.k(model, spec.name, threat)
        if spec.attack is None or threat == "transfer" or k is None or k >= len(self.labels):
            return None
        return self._order[:k].sort().values

    def cell(self, model: EvalModel, spec: AttackSpec, threat: str) -> Cell:
        """The cell, from the cache or computed now."""
        idx = self.subset(spec, threat, model.name)
        key = _key(model, spec, threat, self.surrogate, self.subset_id,
                   None if idx is None else len(idx))
        # the clean cell's key is threat-independent: it is computed once per model and
        # reused by every threat, even when the on-disk cache is disabled
        # a cell is keyed by the model's weights: two registry names of one file share it
        if key in self._clean:
            return replace(self._clean[key], model=model.name, threat=threat)
        method, tm = spec_identity(spec)
        record = self.cache.get(key)
        n = len(self.labels) if idx is None else len(idx)
        if record is None or len(record.get("pred", [])) != n:
            cell = self._compute(model, spec, threat, key, idx)
            self.cache.put(key, cell.to_record())
        else:
            cell = Cell.from_record(record, self.labels, method, tm)
        if spec.attack is None:
            self._clean[key] = cell
        return replace(cell, model=model.name, threat=threat)

    def cell_at(self, model: EvalModel, spec: AttackSpec, threat: str,
                idx: torch.Tensor) -> Cell:
        """``spec`` crafted on the positions ``idx`` (sorted) only, e.g. a cascade's
        still-robust images (:mod:`advdefense.evaluation.cascade_worst`); cached."""
        key = cell_key({"cell": _key(model, spec, threat, self.surrogate, self.subset_id),
                        "at": idx.tolist()})
        method, tm = spec_identity(spec)
        record = self.cache.get(key)
        if record is None or len(record.get("pred", [])) != len(idx):
            cell = self._compute(model, spec, threat, key, idx)
            self.cache.put(key, cell.to_record())
        else:
            cell = Cell.from_record(record, self.labels, method, tm)
        return replace(cell, model=model.name, threat=threat)

    def _compute(self, model: EvalModel, spec: AttackSpec, threat: str, key: str,
                 idx: torch.Tensor | None = None) -> Cell:
        start = time.perf_counter()
        info: dict[str, Any] = {}
        images, labels = self.images, self.labels
        if idx is not None:
            images, labels = images[idx], labels[idx]
        if spec.attack is None:
            adv = images
        elif threat == "transfer":
            adv = self.transfer_images(spec)
        else:
            self.attack_calls += 1
            adv, info = craft(spec, self._attack_model(model), images, labels)
        logits = predict_logits(model.module, adv)
        method, tm = spec_identity(spec)
        return Cell(
            model.name, spec.name, threat, labels.cpu().tolist(), logits.argmax(1).tolist(),
            [round(float(v), 5) for v in logits.amax(1)],
            index=None if idx is None else idx.tolist(),
            l0=None if spec.attack is None else changed_pixels(images, adv).tolist(),
            method=method, threat_model=tm, seconds=round(time.perf_counter() - start, 3),
            info=info, examples=_examples(adv, self.n_examples if spec.attack is not None else 0),
            key=key)


def grid_cells(models: Sequence[EvalModel], attacks: Sequence[AttackSpec],
               threats: Iterable[str]) -> list[tuple[EvalModel, AttackSpec, str]]:
    """All (model, attack, threat) cells to run, threat-major then attack-major.

    Attack-major order keeps one attack's transfer images in use across all models; the
    clean row (``none``) belongs to every threat.
    """
    cells = []
    for threat in threats:
        for spec in attacks:
            if spec.attack is not None and threat not in spec.threats:
                continue
            cells.extend((model, spec, threat) for model in models)
    return cells


def run_grid(grid: Grid, models: Sequence[EvalModel], attacks: Sequence[AttackSpec],
             threats: Iterable[str], progress: bool = True) -> list[Cell]:
    """Evaluate every cell (see :func:`grid_cells`), with a tqdm bar; returns the cells."""
    from tqdm.auto import tqdm

    specs = list(attacks)
    if not any(s.attack is None for s in specs):
        specs.insert(0, AttackSpec(CLEAN, None))
    cells = grid_cells(models, specs, threats)
    out = []
    bar = tqdm(cells, desc="eval grid", unit="cell", disable=not progress)
    for model, spec, threat in bar:
        bar.set_postfix_str(f"{threat}/{spec.name}/{model.name}")
        out.append(grid.cell(model, spec, threat))
    return out
