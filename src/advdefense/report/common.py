"""Formatting shared by the report's sections: numbers, intervals, markdown tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASH = "—"


def fmt(v: Any, digits: int = 3) -> str:
    return DASH if v is None else f"{v:.{digits}f}"


def ci(r: dict[str, Any] | None) -> str:
    if r is None:
        return DASH
    flag = " ⚠" if r.get("flags") else ""
    return f"{r['accuracy']:.3f} [{r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}]{flag}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def index_rows(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["model"], r["attack"], r["threat"]): r for r in rows}


def read_or(path: Path, default: Any) -> Any:
    return json.loads(path.read_text("utf-8")) if path.is_file() else default
