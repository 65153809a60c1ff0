"""Aggregate models trained with several seeds: ``<name>-s<seed>`` rows -> mean and spread.

A seed sweep (``python train.py -m seed=1,2,3 'seed_suffix=-s${seed}'``) registers
``none-fgsm-s1``, ``none-fgsm-s2``, ... ; :func:`seed_groups` groups result rows whose model
names differ only by that suffix (same attack and threat model) and returns one row per group
with the mean and the sample standard deviation of each metric.
"""

from __future__ import annotations

import math
import re
from typing import Any

SEED_SUFFIX = re.compile(r"^(?P<base>.+)-s(?P<seed>\d+)$")
METRICS = ("accuracy", "f1", "accuracy_at_80")


def split_seed(model: str) -> tuple[str, int] | None:
    """``("none-fgsm", 3)`` for ``"none-fgsm-s3"``; None for a name without a seed suffix."""
    m = SEED_SUFFIX.match(model)
    return (m["base"], int(m["seed"])) if m else None


def seed_groups(rows: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS,
                min_seeds: int = 2) -> list[dict[str, Any]]:
    """Mean / std rows over seeds: one per (base model, attack, threat) with >= min_seeds seeds.

    Each row: ``model`` (base name), ``attack``, ``threat``, ``seeds`` (sorted list), and for each
    metric present ``<metric>_mean`` and ``<metric>_std`` (sample std, 0 for a single value).
    """
    groups: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
    for row in rows:
        parsed = split_seed(str(row.get("model", "")))
        if parsed is not None:
            key = (parsed[0], str(row.get("attack")), str(row.get("threat")))
            groups.setdefault(key, []).append((parsed[1], row))
    out = []
    for (base, attack, threat), members in sorted(groups.items()):
        if len({s for s, _ in members}) < min_seeds:
            continue
        agg: dict[str, Any] = {"model": base, "attack": attack, "threat": threat,
                               "seeds": sorted(s for s, _ in members)}
        for metric in metrics:
            values = [float(r[metric]) for _, r in members
                      if isinstance(r.get(metric), int | float) and not isinstance(r.get(metric), bool)]
            if not values:
                continue
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
            agg[f"{metric}_mean"], agg[f"{metric}_std"] = mean, math.sqrt(var)
        out.append(agg)
    return out


def seeds_section(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the report's "Seeds" section (empty when there are no seed groups)."""
    groups = seed_groups(rows)
    if not groups:
        return []
    lines = ["## Seeds (mean ± standard deviation over seeds)", "",
             "| model | threat | attack | seeds | accuracy | F1 |", "|---|---|---|---|---|---|"]
    for g in groups:
        def cell(metric: str, g: dict[str, Any] = g) -> str:
            if f"{metric}_mean" not in g:
                return "-"
            return f"{g[f'{metric}_mean']:.3f} ± {g[f'{metric}_std']:.3f}"
        lines.append(f"| {g['model']} | {g['threat']} | {g['attack']} | "
                     f"{','.join(map(str, g['seeds']))} | {cell('accuracy')} | {cell('f1')} |")
    return [*lines, ""]
