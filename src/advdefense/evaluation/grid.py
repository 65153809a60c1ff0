"""The evaluation grid: every model x every attack x every threat model, cell by cell.

A *cell record* is a plain JSON-able dict::

    {"model", "attack", "threat", "n", "key",
     "pred": [N ints in {0, 1}], "conf": [N floats, max logit],
     "seconds": float, "info": {...attack extras...},
     "examples": {"index": [k ints], "adv": [k x 784 floats]}}

Records are cached on disk per cell (see :mod:`advdefense.evaluation.cache`), so the grid can
be killed and resumed, and a rerun recomputes nothing. Every attack runs on every point: the
per-attack rows are never computed on a filtered subset.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from advdefense.evaluation.cache import CellCache, cell_key
from advdefense.evaluation.threats import (
    CLEAN,
    AttackSpec,
    EvalModel,
    attackable,
    craft,
    predict_logits,
)


class MissingSurrogateError(RuntimeError):
    """The transfer threat model needs a surrogate model that is not in the registry."""


def _key(model: EvalModel, spec: AttackSpec, threat: str, surrogate: EvalModel | None,
         subset_id: str) -> str:
    threat_part = "any" if spec.attack is None else threat
    parts = {"model": model.digest, "attack": spec.name, "config": spec.config,
             "threat": threat_part, "subset": subset_id, "v": 1}
    if threat == "transfer" and spec.attack is not None and surrogate is not None:
        parts["surrogate"] = surrogate.digest
    return cell_key(parts)


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
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cache: CellCache,
                 subset_id: str, surrogate: EvalModel | None = None, n_examples: int = 4) -> None:
        self.images, self.labels, self.cache = images, labels, cache
        self.subset_id, self.surrogate, self.n_examples = subset_id, surrogate, n_examples
        self._transfer: dict[str, torch.Tensor] = {}
        self._attackable: dict[str, nn.Module] = {}
        self.attack_calls = 0

    def transfer_images(self, spec: AttackSpec) -> torch.Tensor:
        """Adversarial images crafted once on the surrogate (memoized and cached on disk)."""
        if self.surrogate is None:
            raise MissingSurrogateError("the transfer threat needs a surrogate model")
        if spec.name in self._transfer:
            return self._transfer[spec.name]
        key = cell_key({"transfer": spec.name, "config": spec.config, "subset": self.subset_id,
                        "surrogate": self.surrogate.digest, "v": 1})
        adv = self.cache.get_tensor(key)
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

    def cell(self, model: EvalModel, spec: AttackSpec, threat: str) -> dict[str, Any]:
        """The record of one cell, from the cache or computed now."""
        key = _key(model, spec, threat, self.surrogate, self.subset_id)
        record = self.cache.get(key)
        if record is None or len(record.get("pred", [])) != len(self.labels):
            record = self._compute(model, spec, threat, key)
            self.cache.put(key, record)
        return record | {"threat": threat}

    def _compute(self, model: EvalModel, spec: AttackSpec, threat: str, key: str) -> dict[str, Any]:
        start = time.perf_counter()
        info: dict[str, Any] = {}
        if spec.attack is None:
            adv = self.images
        elif threat == "transfer":
            adv = self.transfer_images(spec)
        else:
            self.attack_calls += 1
            adv, info = craft(spec, self._attack_model(model), self.images, self.labels)
        logits = predict_logits(model.module, adv)
        return {
            "model": model.name, "attack": spec.name, "threat": threat, "n": len(self.labels),
            "key": key, "pred": logits.argmax(1).tolist(),
            "conf": [round(float(v), 5) for v in logits.amax(1)],
            "seconds": round(time.perf_counter() - start, 3), "info": info,
            "examples": _examples(adv, self.n_examples if spec.attack is not None else 0),
        }


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
             threats: Iterable[str], progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate every cell (see :func:`grid_cells`), with a tqdm bar; returns the records."""
    from tqdm.auto import tqdm

    specs = list(attacks)
    if not any(s.attack is None for s in specs):
        specs.insert(0, AttackSpec(CLEAN, None))
    cells = grid_cells(models, specs, threats)
    records = []
    bar = tqdm(cells, desc="eval grid", unit="cell", disable=not progress)
    for model, spec, threat in bar:
        bar.set_postfix_str(f"{threat}/{spec.name}/{model.name}")
        records.append(grid.cell(model, spec, threat))
    return records
