"""One evaluation run with plain arguments: grid, worst cases, sweeps, sanity checks, files.

``cli/evaluate.py`` turns the Hydra config into these arguments; nothing here knows Hydra.
Files written to ``out_dir`` (atomically): ``results.json``, ``results.csv``,
``sweeps.json`` (eps / rotation / shift sweeps), ``checks.json`` and ``examples.json``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advdefense.attacks.threat import ThreatModel, threat_model_of
from advdefense.evaluation.cache import CellCache, cell_key
from advdefense.evaluation.convergence import convergence_runs
from advdefense.evaluation.grid import Grid, MissingSurrogateError, run_grid
from advdefense.evaluation.l0_curves import l0_curves
from advdefense.evaluation.masking import (
    DEFAULT_SQUEEZE_SURROGATES,
    SqueezeSurrogate,
    masking_checks,
    with_gradient_variants,
)
from advdefense.evaluation.results import to_row, write_csv, write_json
from advdefense.evaluation.sanity import (
    apply_flags,
    convergence_checks,
    gradient_checks,
    grid_checks,
    sweep_checks,
)
from advdefense.evaluation.sweeps import eps_sweep, spatial_sweep
from advdefense.evaluation.threats import AttackSpec, EvalModel, attackable
from advdefense.evaluation.worst_case import add_worst_cases
from advdefense.io import atomic_write_text
from advdefense.sampling import stratified_sample


@dataclass
class SweepConfig:
    """What the sweeps run on (see :mod:`advdefense.evaluation.sweeps`).

    ``factories`` maps an attack name (``fgsm``, ``pgd``) to (eps -> attack, base config).
    """

    n: int | float = 200      # images, or a fraction in (0, 1) of the evaluated images
    min_n: int = 0            # at least this many images when n is a fraction
    eps: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
    threats: Sequence[str] = ("whitebox", "transfer")
    factories: dict[str, tuple[Callable[[float], Any], dict[str, Any]]] = field(default_factory=dict)
    angles: Sequence[float] = tuple(range(-30, 31, 5))
    shifts: Sequence[float] = (-3, -2, -1, 0, 1, 2, 3)
    gradient_n: int = 64


@dataclass
class SanityConfig:
    """Tolerances of the sanity checks, and the gradient variants of white-box PGD
    (:mod:`advdefense.evaluation.masking`: squeeze surrogates on models with a feature squeeze,
    the members' margins on a majority vote; none and False = straight-through PGD only)."""

    tol: float = 0.01
    eps1_max_acc: float = 0.05
    max_zero_grad: float = 0.05
    convergence_n: int = 0    # images per convergence run (0 = off); see evaluation.convergence
    squeeze_surrogates: Sequence[SqueezeSurrogate] = DEFAULT_SQUEEZE_SURROGATES
    vote_members: bool = True


def threat_models(attacks: Sequence[AttackSpec]) -> dict[str, ThreatModel | None]:
    """Attack row -> the threat model its attack declares (None: the clean row, undeclared)."""
    return {s.name: threat_model_of(s.attack) for s in attacks}


def sparse_attacks(attacks: Sequence[AttackSpec]) -> list[str]:
    """Rows whose attack declares an L0 threat model (any access, any budget)."""
    return [name for name, tm in threat_models(attacks).items() if tm is not None and tm.l0]


def subset_id(split: str, idx: torch.Tensor) -> str:
    return f"{split}:{len(idx)}:" + cell_key({"idx": idx.tolist()})[:16]


def _need_surrogate(threats: Sequence[str], surrogate: EvalModel | None) -> None:
    if "transfer" in threats and surrogate is None:
        raise MissingSurrogateError("the transfer threat model needs the surrogate")


def evaluate_models(models: Sequence[EvalModel], attacks: Sequence[AttackSpec],
                    images: torch.Tensor, labels: torch.Tensor, threats: Sequence[str],
                    surrogate: EvalModel | None, cache: CellCache, out_dir: str | Path,
                    sweep: SweepConfig | None = None, sanity: SanityConfig | None = None,
                    seed: int = 0, progress: bool = True,
                    meta: dict[str, Any] | None = None,
                    attack_n: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Run the grid (and sweeps), check it, write the result files; returns everything.

    Args:
        models: evaluated models.
        attacks: configured attacks (the clean row is added automatically).
        images: (N, 1, 28, 28) float in [0, 1], already subsampled; labels (N,) in {0, 1}.
        threats: subset of ('transfer', 'whitebox', 'blackbox').
        surrogate: transfer surrogate (required if 'transfer' in threats).
        cache: the cell cache.
        out_dir: output folder.
        sweep: sweep settings, or None to skip sweeps (and the checks that need them).
        sanity: sanity-check tolerances.
        attack_n: attack row name -> most images it is crafted on against each model
            (white-box / black-box; nested stratified subsets, see ``evaluation.grid``).

    Returns:
        ``{"rows", "records", "sweeps", "checks", "meta", "l0"}`` (``l0``: sparse attacks'
        curves by pixel budget, :mod:`advdefense.evaluation.l0_curves`).
    """
    _need_surrogate(threats, surrogate)
    sanity = sanity or SanityConfig()
    attacks = with_gradient_variants(attacks, sanity.squeeze_surrogates, sanity.vote_members)
    start = time.perf_counter()
    sid = subset_id("test", torch.arange(len(labels))) + cell_key({"l": labels.tolist()})[:8]
    attack_n = {k: int(v) for k, v in (attack_n or {}).items()
                if v is not None and int(v) < len(labels)}
    grid = Grid(images, labels, cache, sid, surrogate, attack_n=attack_n, seed=seed)
    sparse, tms = sparse_attacks(attacks), threat_models(attacks)
    records = add_worst_cases(run_grid(grid, models, attacks, threats, progress), labels,
                              threat_models=tms)
    rows = [to_row(r, labels) for r in records]
    timings = {"grid": round(time.perf_counter() - start, 2)}
    sweeps: dict[str, list[dict[str, Any]]] = {"eps": [], "spatial": []}
    checks = grid_checks(rows, {s.name: s.config.get("eps") for s in attacks}, sanity.tol,
                         records, labels, tms)
    checks += masking_checks(records, sanity.tol)
    if sanity.convergence_n > 0:
        t0 = time.perf_counter()
        checks += convergence_checks(convergence_runs(
            models, attacks, records, images, labels, cache, sanity.convergence_n, seed),
            sanity.tol)
        timings["convergence"] = round(time.perf_counter() - t0, 2)
    if sweep is not None:
        t0 = time.perf_counter()
        sweeps, more = _run_sweeps(models, images, labels, surrogate, cache, sweep, sanity,
                                   seed, progress)
        checks += more
        timings["sweeps"] = round(time.perf_counter() - t0, 2)
    apply_flags(rows, checks)
    meta = (meta or {}) | {"n": len(labels), "threats": list(threats),
                           "models": [m.name for m in models],
                           "attacks": {s.name: s.config for s in attacks},
                           "threat_models": {k: None if v is None else v.as_dict()
                                             for k, v in tms.items()},
                           "surrogate": surrogate.name if surrogate else None,
                           "cache_hits": cache.hits, "attack_calls": grid.attack_calls,
                           "attack_n": attack_n, "timings": timings, "seconds": round(time.perf_counter() - start, 2)}
    l0 = l0_curves(records, labels, {name: tms[name].l0.k for name in sparse})
    _write(Path(out_dir), rows, records, sweeps, checks, meta)
    atomic_write_text(Path(out_dir) / "l0.json", json.dumps(l0))
    _write_examples(Path(out_dir), records, images, labels)
    return {"rows": rows, "records": records, "sweeps": sweeps, "checks": checks, "meta": meta,
            "l0": l0}


def _run_sweeps(models: Sequence[EvalModel], images: torch.Tensor, labels: torch.Tensor,
                surrogate: EvalModel | None, cache: CellCache, sweep: SweepConfig,
                sanity: SanityConfig, seed: int, progress: bool
                ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    k = sweep.n if isinstance(sweep.n, int) else max(sweep.min_n, math.ceil(sweep.n * len(labels)))
    idx = stratified_sample(labels, k, seed)
    x, y = images[idx], labels[idx]
    threats = [t for t in sweep.threats if t != "transfer" or surrogate is not None]
    grid = Grid(x, y, cache, subset_id("sweep", idx) + cell_key({"l": labels.tolist()})[:8],
                surrogate)
    eps_rows = eps_sweep(grid, models, sweep.factories, sweep.eps, threats, progress)
    spatial_rows = spatial_sweep(models, x, y, sweep.angles, sweep.shifts)
    checks = sweep_checks(eps_rows, sanity.tol, sanity.eps1_max_acc)
    g = min(sweep.gradient_n, len(y))
    checks += gradient_checks({m.name: attackable(m.module) for m in models}, x[:g], y[:g],
                              sanity.max_zero_grad)
    return {"eps": eps_rows, "spatial": spatial_rows}, checks


def _write(out: Path, rows: list[dict[str, Any]], records: list[dict[str, Any]],
           sweeps: dict[str, Any], checks: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", rows, meta)
    write_csv(out / "results.csv", rows)
    atomic_write_text(out / "sweeps.json", json.dumps(sweeps))
    atomic_write_text(out / "checks.json", json.dumps(checks, indent=1))


def _write_examples(out: Path, records: list[dict[str, Any]], images: torch.Tensor,
                    labels: torch.Tensor, k: int = 4) -> None:
    """``examples.json``: the first ``k`` originals and each cell's adversarial versions."""
    cells = [{key: r[key] for key in ("model", "attack", "threat", "examples", "pred")}
             for r in records if r.get("examples", {}).get("adv")]
    for c in cells:
        c["pred"] = c["pred"][:k]
    originals = [[round(float(v), 4) for v in img.flatten()] for img in images[:k]]
    payload = {"originals": originals, "labels": labels[:k].tolist(), "cells": cells}
    atomic_write_text(out / "examples.json", json.dumps(payload))
