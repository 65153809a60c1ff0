"""One evaluation run: grid, worst cases, sweeps, sanity checks, files.

``cli/evaluate.py`` turns the Hydra config into :class:`~advdefense.evaluation.settings.EvalSettings`
(:mod:`advdefense.evaluation.settings` holds the rules); nothing here knows Hydra.
Files written to ``out_dir`` (atomically): ``results.json``, ``results.csv``,
``sweeps.json`` (eps / rotation / shift sweeps), ``checks.json``, ``l0.json`` and
``examples.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from advdefense.attacks.threat import threat_model_of
from advdefense.evaluation.budget import Budget
from advdefense.evaluation.cache import CellCache, cell_key, code_version, data_digest
from advdefense.evaluation.cascade_worst import worst_cases
from advdefense.evaluation.cells import Cell, ResultSet
from advdefense.evaluation.convergence import convergence_runs
from advdefense.evaluation.grid import Grid, MissingSurrogateError, run_grid
from advdefense.evaluation.l0_curves import l0_curves
from advdefense.evaluation.masking import masking_checks, with_gradient_variants
from advdefense.evaluation.results import to_row, write_csv, write_json
from advdefense.evaluation.sanity import (
    apply_flags,
    convergence_checks,
    gradient_checks,
    grid_checks,
    sweep_checks,
)
from advdefense.evaluation.settings import EvalSettings, SanityConfig, SweepConfig
from advdefense.evaluation.sweeps import eps_sweep, spatial_sweep
from advdefense.evaluation.threats import AttackSpec, EvalModel, attackable
from advdefense.io import atomic_write_text
from advdefense.sampling import stratified_sample


def subset_id(split: str, images: torch.Tensor, labels: torch.Tensor) -> str:
    """The identity of an evaluated image set in cell keys: its split, size and content."""
    return f"{split}:{len(labels)}:" + data_digest(images, labels)


def _need_surrogate(threats: Sequence[str], surrogate: EvalModel | None) -> None:
    if "transfer" in threats and surrogate is None:
        raise MissingSurrogateError("the transfer threat model needs the surrogate")


def evaluate_models(models: Sequence[EvalModel], attacks: Sequence[AttackSpec],
                    images: torch.Tensor, labels: torch.Tensor,
                    settings: EvalSettings) -> dict[str, Any]:
    """Run the grid (and sweeps), check it, write the result files; returns everything.

    Args:
        models: evaluated models.
        attacks: configured attacks (the clean row is added automatically).
        images: (N, 1, 28, 28) float in [0, 1], already subsampled; labels (N,) in {0, 1}.
        settings: threats, surrogate, cache, output folder, sweeps, sanity tolerances, budgets.

    Returns:
        ``{"rows", "cells", "sweeps", "checks", "meta", "l0"}`` (``cells``: a
        :class:`~advdefense.evaluation.cells.ResultSet`; ``l0``: sparse attacks' curves by
        pixel budget, :mod:`advdefense.evaluation.l0_curves`).
    """
    s = settings
    threats, surrogate, cache, seed = list(s.threats), s.surrogate, s.cache, s.seed
    _need_surrogate(threats, surrogate)
    sanity = s.sanity
    attacks = with_gradient_variants(attacks, sanity.squeeze_surrogates, sanity.vote_members)
    start = time.perf_counter()
    sid = subset_id("test", images, labels)
    attack_n = {k: int(v) for k, v in s.attack_n.items()
                if v is not None and int(v) < len(labels)}
    budget = Budget(attack_n, s.full_n)
    grid = Grid(images, labels, cache, sid, surrogate, attack_n=budget, seed=seed)
    grid_out = run_grid(grid, models, attacks, threats, s.progress)
    t0 = time.perf_counter()
    # worst cases; those of eval.full_n's models completed by a cascade (evaluation.budget)
    done, full_n = worst_cases(grid, models, attacks, grid_out, budget)
    cells = ResultSet(done)
    rows = [to_row(c) for c in cells]
    timings = {"grid": round(t0 - start, 2), "worst_cases": round(time.perf_counter() - t0, 2)}
    sweeps: dict[str, list[dict[str, Any]]] = {"eps": [], "spatial": []}
    checks = grid_checks(cells.cells, sanity.tol) + masking_checks(cells.cells, sanity.tol)
    if sanity.convergence_n > 0:
        t0 = time.perf_counter()
        checks += convergence_checks(convergence_runs(
            models, attacks, cells.cells, images, cache, sanity.convergence_n, seed), sanity.tol)
        timings["convergence"] = round(time.perf_counter() - t0, 2)
    if s.sweep is not None:
        t0 = time.perf_counter()
        sweeps, more = _run_sweeps(models, images, labels, surrogate, cache, s.sweep, sanity,
                                   seed, s.progress)
        checks += more
        timings["sweeps"] = round(time.perf_counter() - t0, 2)
    apply_flags(rows, checks)
    tms = {spec.name: threat_model_of(spec.attack) for spec in attacks}
    meta = dict(s.meta) | {"n": len(labels), "threats": list(threats),
                           "models": [m.name for m in models],
                           "attacks": {a.name: a.config for a in attacks},
                           "threat_models": {k: None if v is None else v.as_dict()
                                             for k, v in tms.items()},
                           "surrogate": surrogate.name if surrogate else None,
                           "cache_hits": cache.hits, "attack_calls": grid.attack_calls,
                           "attack_n": attack_n, "timings": timings,
                           "seconds": round(time.perf_counter() - start, 2)}
    described = budget.describe(len(labels), full_n)
    if described is not None:  # eval.full_n names a model (report.md states the rule)
        meta["full_n"] = described
    l0 = l0_curves(cells)
    out = Path(s.out_dir)
    _write(out, rows, sweeps, checks, meta)
    atomic_write_text(out / "l0.json", json.dumps(l0))
    _write_examples(out, cells.cells, images, labels)
    return {"rows": rows, "cells": cells, "sweeps": sweeps, "checks": checks, "meta": meta,
            "l0": l0}


def _run_sweeps(models: Sequence[EvalModel], images: torch.Tensor, labels: torch.Tensor,
                surrogate: EvalModel | None, cache: CellCache, sweep: SweepConfig,
                sanity: SanityConfig, seed: int, progress: bool
                ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """The eps and spatial sweeps and the gradient check; every part is cached per model, so
    a rerun (or the final run after a multirun over models) recomputes nothing."""
    idx = stratified_sample(labels, sweep.images(len(labels)), seed)
    x, y = images[idx], labels[idx]
    threats = [t for t in sweep.threats if t != "transfer" or surrogate is not None]
    sid = subset_id("sweep", x, y)
    grid = Grid(x, y, cache, sid, surrogate)
    eps_rows = eps_sweep(grid, models, sweep.factories, sweep.eps, threats, progress)
    g = min(sweep.gradient_n, len(y))
    spatial_rows, grad = [], []
    for m in models:  # cached by the weights: rows take this model's name
        spatial_rows += _cached(cache, {"spatial_sweep": m.digest, "subset": sid,
                                        "angles": list(sweep.angles), "shifts": list(sweep.shifts)},
                                lambda m=m: spatial_sweep([m], x, y, sweep.angles, sweep.shifts),
                                m.name)
        grad += _cached(cache, {"zero_gradient": m.digest, "subset": sid, "g": g,
                                "max": sanity.max_zero_grad},
                        lambda m=m: gradient_checks({m.name: attackable(m.module)}, x[:g], y[:g],
                                                    sanity.max_zero_grad), m.name)
    checks = sweep_checks(eps_rows, sanity.tol, sanity.eps1_max_acc) + grad
    return {"eps": eps_rows, "spatial": spatial_rows}, checks


def _cached(cache: CellCache, parts: dict[str, Any], compute: Callable[[], list[dict[str, Any]]],
            model: str) -> list[dict[str, Any]]:
    """``compute()`` (a JSON-able list of ``model``'s rows), stored in ``cache`` under ``parts``
    + the code version; each row gets ``model`` as its name."""
    key = cell_key(parts | {"v": code_version()})
    hit = cache.get(key)
    if hit is not None and isinstance(hit.get("items"), list):
        items = hit["items"]
    else:
        items = compute()
        cache.put(key, {"items": items})
    return [item | {"model": model} for item in items]


def _write(out: Path, rows: list[dict[str, Any]], sweeps: dict[str, Any],
           checks: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", rows, meta)
    write_csv(out / "results.csv", rows)
    atomic_write_text(out / "sweeps.json", json.dumps(sweeps))
    atomic_write_text(out / "checks.json", json.dumps(checks, indent=1))


def _write_examples(out: Path, cells: Sequence[Cell], images: torch.Tensor,
                    labels: torch.Tensor, k: int = 4) -> None:
    """``examples.json``: the first ``k`` originals and each cell's adversarial versions."""
    shown = [{"model": c.model, "attack": c.attack, "threat": c.threat, "examples": c.examples,
              "pred": c.pred[:k]} for c in cells if c.examples.get("adv")]
    originals = [[round(float(v), 4) for v in img.flatten()] for img in images[:k]]
    payload = {"originals": originals, "labels": labels[:k].tolist(), "cells": shown}
    atomic_write_text(out / "examples.json", json.dumps(payload))
