"""Find result rows by what they measure, never by their row names.

A row of ``results.json`` carries ``method`` (the attack's family: ``fgsm``, ``pgd``,
``cascade``, ``jsma``, ``sparse_pgd``, ``sparse_rs``, ``spatial``, ``local_search``; ``none``
for the clean row, the worst-case name for worst cases) and ``threat_model`` (its declared
threat model as a flat dict: ``set`` = ``linf`` / ``l0`` / ``spatial`` with ``eps``, ``k``,
``direction``, ``preset``..., and ``access`` = ``gradient`` / ``queries``). A *selector* is a
dict of some of these keys, e.g. ``{"method": "sparse_pgd", "k": 20}``; a row matches when it
has every key with that value. Renaming a row in the config therefore changes nothing that is
found by a selector (the goals, the paper tables, the console headline, the eps plots).

Rows written before rows carried ``method`` (older ``results.json``) are found by the fallback
row name a caller gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Row = dict[str, Any]
Selector = Mapping[str, Any]


def describe(row: Mapping[str, Any]) -> dict[str, Any]:
    """The flat description a selector is matched against: ``method`` + the threat model."""
    return {"method": row.get("method")} | dict(row.get("threat_model") or {})


def matches(row: Mapping[str, Any], selector: Selector) -> bool:
    """Whether ``row`` has every key of ``selector`` with that value."""
    have = describe(row)
    return all(k in have and have[k] == v for k, v in selector.items())


def find(rows: Iterable[Row], model: str, threat: str | None,
         selectors: Sequence[Selector], fallback: Sequence[str] = ()) -> Row | None:
    """The first row of ``model`` (under ``threat``, if given) matching the first selector
    that matches any, in row order; for rows without ``method``, the first fallback name."""
    mine = [r for r in rows if r["model"] == model and (threat is None or r["threat"] == threat)]
    typed = [r for r in mine if "method" in r]
    for sel in selectors:
        hit = next((r for r in typed if matches(r, sel)), None)
        if hit is not None:
            return hit
    untyped = [r for r in mine if "method" not in r]
    for name in fallback:
        hit = next((r for r in untyped if r["attack"] == name), None)
        if hit is not None:
            return hit
    return None


def selector_of(entry: Mapping[str, Any]) -> list[Selector]:
    """The selectors of a goal or paper-table entry: its ``select`` (one dict or a list)."""
    sel = entry.get("select")
    if sel is None:
        return []
    return [sel] if isinstance(sel, Mapping) else list(sel)
