"""Result rows (metrics per cell) and their atomic JSON / CSV files.

A row is one model x attack x threat: ``model``, ``attack``, ``threat``, ``method`` and
``threat_model`` (what the row measures, see :mod:`advdefense.evaluation.cells`; the report
dispatches on these, never on the row name), ``n``, the metrics
of :func:`advdefense.evaluation.metrics.metrics_with_intervals` with their Wilson bounds,
``confusion`` ([[TN, FP], [FN, TP]], positive = digit 7), ``seconds``, ``queries_mean`` and
``flags`` (names of the sanity checks that failed for this row; empty = none), and for rows
that are the per-example worst over gradient variants (:mod:`advdefense.evaluation.masking`)
``gradient_variants`` (each variant's name, accuracy alone and images won; JSON only) and
``strongest_variant`` (the one with the lowest accuracy alone). ``n`` is the
number of images the row was computed on (a budgeted attack's subset, see ``eval.attack_n``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from advdefense.evaluation.cells import Cell
from advdefense.evaluation.metrics import metrics_with_intervals
from advdefense.io import atomic_write_text

COLUMNS = ("model", "attack", "threat", "n", "accuracy", "accuracy_lo", "accuracy_hi",
           "precision", "precision_lo", "precision_hi", "recall", "recall_lo", "recall_hi",
           "f1", "accuracy_at_80", "accuracy_at_80_lo", "accuracy_at_80_hi", "confusion",
           "seconds", "queries_mean", "flags")


def to_row(cell: Cell) -> dict[str, Any]:
    """Metrics row of one cell (on the images it covers)."""
    labels = torch.tensor(cell.labels, dtype=torch.long)
    pred = torch.tensor(cell.pred, dtype=torch.long)
    conf = torch.tensor(cell.conf, dtype=torch.double)
    tm = cell.threat_model
    row = {"model": cell.model, "attack": cell.attack, "threat": cell.threat,
           "method": cell.method, "threat_model": None if tm is None else tm.as_dict()}
    row |= metrics_with_intervals(labels, pred, conf)
    row["seconds"] = cell.seconds
    row["queries_mean"] = cell.info.get("queries_mean")
    row["flags"] = []
    variants = cell.info.get("variants")
    if isinstance(variants, list) and variants:  # a per-example worst over gradient variants
        row["gradient_variants"] = variants      # (evaluation.masking): each one's accuracy
        row["strongest_variant"] = min(variants, key=lambda v: v["accuracy"])["name"]
    return row


def _clean(value: Any) -> Any:
    """NaN -> None for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path: str | Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    payload = {"meta": meta, "rows": [{k: _clean(v) for k, v in r.items()} for r in rows]}
    atomic_write_text(path, json.dumps(payload, indent=1, allow_nan=False))


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        flat = dict(r)
        flat["confusion"] = json.dumps(r.get("confusion"))
        flat["flags"] = ";".join(r.get("flags", []))
        writer.writerow({k: _clean(v) for k, v in flat.items()})
    atomic_write_text(path, buffer.getvalue())


def read_json(path: str | Path) -> dict[str, Any]:
    """``{"meta": {...}, "rows": [...]}`` as written by :func:`write_json`."""
    return json.loads(Path(path).read_text("utf-8"))
