"""Result rows (metrics per cell) and their atomic JSON / CSV files.

A row is one model x attack x threat: ``model``, ``attack``, ``threat``, ``n``, the metrics
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

from advdefense.evaluation.metrics import metrics_with_intervals
from advdefense.io import atomic_write_text

COLUMNS = ("model", "attack", "threat", "n", "accuracy", "accuracy_lo", "accuracy_hi",
           "precision", "precision_lo", "precision_hi", "recall", "recall_lo", "recall_hi",
           "f1", "accuracy_at_80", "accuracy_at_80_lo", "accuracy_at_80_hi", "confusion",
           "seconds", "queries_mean", "flags")


def to_row(record: dict[str, Any], labels: torch.Tensor) -> dict[str, Any]:
    """Metrics row of one cell record (see :mod:`advdefense.evaluation.grid`)."""
    pred = torch.tensor(record["pred"], dtype=torch.long)
    conf = torch.tensor(record["conf"], dtype=torch.double)
    labels = labels.cpu()  # records hold plain lists; the images may live on a GPU
    if record.get("index") is not None:  # a budgeted cell: its subset of the images
        labels = labels[torch.tensor(record["index"], dtype=torch.long)]
    row = {"model": record["model"], "attack": record["attack"], "threat": record["threat"]}
    row |= metrics_with_intervals(labels, pred, conf)
    row["seconds"] = record.get("seconds", 0.0)
    row["queries_mean"] = record.get("info", {}).get("queries_mean")
    row["flags"] = list(record.get("flags", []))
    variants = record.get("info", {}).get("variants")
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
