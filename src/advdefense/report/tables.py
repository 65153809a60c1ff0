"""The report's tables: the paper's Tables I-VII beside ours, the robust-accuracy summary, the
console headline and the full grid. Rows are found by what they measure
(:mod:`advdefense.evaluation.select`), never by their config names."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from advdefense.evaluation.cells import CLEAN
from advdefense.evaluation.select import find, selector_of
from advdefense.evaluation.worst_case import HEADLINE_K, WORST, WORST_DENSE, WORST_STRESS
from advdefense.report.common import DASH, ci, fmt, index_rows, md_table

THREAT_COLS = ("transfer", "whitebox")


def paper_tables() -> dict[str, Any]:
    """The paper's published numbers (package data ``resources/paper_tables.json``)."""
    text = resources.files("advdefense").joinpath("resources/paper_tables.json").read_text("utf-8")
    return json.loads(text)


def _paper_row(rows: list[dict[str, Any]], paper: dict[str, Any], model: str, attack: str,
               threat: str) -> dict[str, Any] | None:
    """Our row for the paper's ``attack`` (found by ``attack_select``, see
    :mod:`advdefense.evaluation.select`; ``attack_map`` names it in older result files)."""
    sel = selector_of({"select": paper.get("attack_select", {}).get(attack)})
    return find(rows, model, threat, sel, [paper["attack_map"].get(attack, attack)])


def _ours(r: dict[str, Any] | None, keys: tuple[str, ...]) -> list[str]:
    if r is None:
        return [DASH] * len(keys)
    flag = " ⚠" if r.get("flags") else ""
    return [fmt(r.get(k)) + (flag if k == keys[-1] else "") for k in keys]


def _label(paper: dict[str, Any], attack: str, row: dict[str, Any] | None) -> str:
    """Our row's name for the paper's ``attack`` (the default name when it is not there)."""
    return row["attack"] if row is not None else paper["attack_map"].get(attack, attack)


def _missing(model: str, present: set[str], train: str) -> list[str]:
    if model in present:
        return []
    return [f"*`{model}` is not in this evaluation (not in the registry or not selected); "
            f"train it with `{train}`. Its cells show {DASH}.*", ""]


def single_model_tables(rows: list[dict[str, Any]], paper: dict[str, Any]) -> list[str]:
    """Tables I-V: paper P/R/F1 beside ours (transfer = comparable, white-box = honest)."""
    present = {r["model"] for r in rows}
    keys = ("precision", "recall", "f1")
    out: list[str] = []
    for num, t in paper["tables"].items():
        out += [f"### Table {num}: {t['title']} (ours: `{t['model']}`)", ""]
        out += _missing(t["model"], present, t["train"])
        body = []
        for attack, vals in t["rows"].items():
            tr, wb = (_paper_row(rows, paper, t["model"], attack, th) for th in THREAT_COLS)
            body.append([f"{attack} (`{_label(paper, attack, tr or wb)}`)",
                         *[fmt(vals[k]) for k in keys], *_ours(tr, keys),
                         *_ours(wb, keys + ("accuracy",))])
        out += md_table(["attack", "paper P", "paper R", "paper F1", "ours transfer P", "R", "F1",
                          "ours white-box P", "R", "F1", "acc"], body) + [""]
    return out


def integrated_tables(rows: list[dict[str, Any]], paper: dict[str, Any]) -> list[str]:
    """Table VI (members, present or not) and Table VII (stacker) beside the paper."""
    present = {r["model"] for r in rows}
    mem = paper["members"]
    out = [f"### {mem['title']}", ""]
    out += md_table(["#", "member", "in this evaluation"],
                     [[k, f"`{v}`", "yes" if v in present else f"no: `{mem['train']}`"]
                      for k, v in mem["rows"].items()]) + [""]
    t = paper["integrated"]
    out += [f"### {t['title']} (ours: `{t['model']}`)", "",
            "The paper's rows apply an extra preprocessing (clean / gaussian / squeeze) before the "
            "integrated model; ours has no extra stage, so our stacker's row for each attack is "
            "repeated beside each of the paper's three preprocessing rows.", ""]
    out += _missing(t["model"], present, t["train"])
    keys = ("accuracy", "precision", "recall", "f1")
    body = []
    for name, vals in t["rows"].items():
        pre, attack = name.split("/")
        key = "clean" if attack == "none" else attack
        tr, wb = (_paper_row(rows, paper, t["model"], key, th) for th in THREAT_COLS)
        body.append([pre, f"{attack} (`{_label(paper, key, tr or wb)}`)",
                     *[fmt(vals[k]) for k in keys], *_ours(tr, keys), *_ours(wb, keys)])
    out += md_table(["paper preprocess", "attack", "paper acc", "P", "R", "F1",
                      "ours transfer acc", "P", "R", "F1", "ours white-box acc", "P", "R", "F1"],
                     body) + [""]
    return out


def robust_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per model: clean accuracy and the worst case per threat model, with 95% CIs."""
    idx = index_rows(rows)
    threats = [t for t in ("transfer", "whitebox", "blackbox", "all")
               if any(r["threat"] == t for r in rows)]
    dense = any(r["attack"] == WORST_DENSE for r in rows)
    stress = any(r["attack"] == WORST_STRESS and r["threat"] == "all" for r in rows)
    body = []
    for m in sorted({r["model"] for r in rows}):
        clean = find(rows, m, None, [CLEAN_SELECT], [CLEAN])
        cells = [ci(clean)]
        for t in threats:
            cells.append(ci(idx.get((m, "worst_case", t))))
        if dense:
            cells.append(ci(idx.get((m, WORST_DENSE, "whitebox"))))
        if stress:
            cells.append(ci(idx.get((m, WORST_STRESS, "all"))))
        body.append([f"`{m}`", *cells])
    header = ["model", "clean acc", *[f"worst case: {t}" for t in threats]]
    if dense:
        header.append("worst case: whitebox, without the L0 attacks")
    if stress:
        header.append(f"stress worst case: all, with the L0 rows above {HEADLINE_K} pixels")
    return md_table(header, body) + [""]


# Console columns: (selectors, first that matches wins; threat; header label or None = the row
# name). Rows are found by method and threat model (advdefense.evaluation.select); the names
# find rows of older result files.
CLEAN_SELECT = {"method": CLEAN}
HEADLINE = (([CLEAN_SELECT], ("none",), None, "clean"),
            ([{"method": "fgsm", "set": "linf"}], ("fgsm",), "whitebox", None),
            ([{"method": "cascade", "set": "linf"}, {"method": "pgd", "set": "linf"}],
             ("autoattack", "pgd"), "whitebox", None),
            ([{"set": "spatial", "preset": "uae_warmup"}], ("spatial_uae",), "whitebox", None),
            ([{"method": "sparse_pgd", "k": HEADLINE_K}, {"method": "sparse_pgd", "k": 78}],
             ("sparse_pgd_k20", "sparse_pgd"), "whitebox", None),
            ([{"method": "sparse_rs", "k": HEADLINE_K}, {"method": "local_search", "set": "l0"}],
             ("sparse_rs_k20", "local_search"), "blackbox", None),
            ([{"method": WORST}], (WORST,), "all", "worst case"))


def headline_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The console summary: one line per model, accuracy under the headline attacks.

    Columns (those present in ``rows``): clean, FGSM, autoattack (else PGD), the UAE spatial
    preset (white-box), sparse PGD and Sparse-RS at k = 20 pixels (else the 78-pixel sparse PGD
    and the local search), and the headline worst case over all threat models; each
    header names the attack, the threat model and the n behind it; ⚠ marks flagged rows.
    Returns ``(header, body)`` with full model names; the full grid is in the result files.
    """
    models = list(dict.fromkeys(r["model"] for r in rows))
    header, cols = ["model"], []
    for selectors, names, threat, label in HEADLINE:
        # the first selector that finds a row for any model decides the column
        for sel in selectors:
            cells = {m: find(rows, m, threat, [sel], names) for m in models}
            if any(c is not None for c in cells.values()):
                break
        ns = sorted({r["n"] for r in cells.values() if r is not None})
        if not ns:
            continue
        attack = next(r["attack"] for r in cells.values() if r is not None)
        n = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
        header.append("\n".join([label or attack, threat or "", n]))
        cols.append(cells)
    body = [[m, *(_headline_cell(c[m]) for c in cols)] for m in models]
    return header, body


def _headline_cell(r: dict[str, Any] | None) -> str:
    return DASH if r is None else f"{r['accuracy']:.3f}" + (" ⚠" if r.get("flags") else "")


def full_grid(rows: list[dict[str, Any]]) -> list[str]:
    """Every row of the grid as a markdown table."""
    body = [[f"`{r['model']}`", r["threat"], r["attack"], str(r["n"]), ci(r), fmt(r["precision"]),
             fmt(r["recall"]), fmt(r["f1"]), fmt(r["accuracy_at_80"]), str(r["confusion"]),
             ", ".join(r.get("flags") or []) or "-"] for r in rows]
    return md_table(["model", "threat", "attack", "n", "accuracy [95% CI]", "precision", "recall",
                      "F1", "acc@80%", "confusion", "flags"], body) + [""]


def full_grid_section(rows: list[dict[str, Any]]) -> list[str]:
    """The full grid, folded (``<details>``): it is long; ``results.csv`` holds the same rows."""
    return ["## Full grid", "",
            f"All {len(rows)} rows; the same as [results.csv](results.csv) and results.json.", "",
            "<details>", f"<summary>Show the full grid ({len(rows)} rows)</summary>", "",
            *full_grid(rows), "</details>", ""]
