"""The evaluation report: the paper's Tables I-VII with our numbers beside them, the goals of
its own experiment (if it has any) with honest verdicts, the full grid (folded), the sanity
checks and the plots; and the console summary. Reads the pipeline's files; never runs a model.

    from advdefense.report import write_report
    write_report("logs/evaluate/runs/<run>")   # -> <run>/report.md + <run>/plots/*.png
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from advdefense.evaluation.cells import CLEAN
from advdefense.evaluation.metrics import wilson
from advdefense.evaluation.select import find, selector_of
from advdefense.evaluation.worst_case import HEADLINE_K, WORST, WORST_DENSE, WORST_STRESS
from advdefense.registry import atomic_write_text

DASH = "—"
THREAT_COLS = ("transfer", "whitebox")


def paper_tables() -> dict[str, Any]:
    """The paper's published numbers (package data ``resources/paper_tables.json``)."""
    text = resources.files("advdefense").joinpath("resources/paper_tables.json").read_text("utf-8")
    return json.loads(text)


def _f(v: Any, digits: int = 3) -> str:
    return DASH if v is None else f"{v:.{digits}f}"


def _index(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["model"], r["attack"], r["threat"]): r for r in rows}


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
    return [_f(r.get(k)) + (flag if k == keys[-1] else "") for k in keys]


def _label(paper: dict[str, Any], attack: str, row: dict[str, Any] | None) -> str:
    """Our row's name for the paper's ``attack`` (the default name when it is not there)."""
    return row["attack"] if row is not None else paper["attack_map"].get(attack, attack)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


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
                         *[_f(vals[k]) for k in keys], *_ours(tr, keys),
                         *_ours(wb, keys + ("accuracy",))])
        out += _md_table(["attack", "paper P", "paper R", "paper F1", "ours transfer P", "R", "F1",
                          "ours white-box P", "R", "F1", "acc"], body) + [""]
    return out


def integrated_tables(rows: list[dict[str, Any]], paper: dict[str, Any]) -> list[str]:
    """Table VI (members, present or not) and Table VII (stacker) beside the paper."""
    present = {r["model"] for r in rows}
    mem = paper["members"]
    out = [f"### {mem['title']}", ""]
    out += _md_table(["#", "member", "in this evaluation"],
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
                     *[_f(vals[k]) for k in keys], *_ours(tr, keys), *_ours(wb, keys)])
    out += _md_table(["paper preprocess", "attack", "paper acc", "P", "R", "F1",
                      "ours transfer acc", "P", "R", "F1", "ours white-box acc", "P", "R", "F1"],
                     body) + [""]
    return out


GOALS_FILE = "resources/robust_goals.json"


def experiment_goals(experiment: str | None) -> dict[str, Any] | None:
    """The goals of ``experiment`` (package data ``resources/robust_goals.json``), or None.

    An entry ``{"same_as": "<other>"}`` shares another experiment's goals. Experiments without
    goals (``paper``, ``paper_quick``, a plain ``evaluate.py``) get None: no goals section.
    """
    if not experiment:
        return None
    text = resources.files("advdefense").joinpath(GOALS_FILE).read_text("utf-8")
    table = json.loads(text)["experiments"]
    goals, seen = table.get(str(experiment)), {str(experiment)}
    while isinstance(goals, dict) and "same_as" in goals:
        if goals["same_as"] in seen:
            raise ValueError(f"{GOALS_FILE}: 'same_as' loops through {sorted(seen)}")
        seen.add(goals["same_as"])
        goals = table.get(goals["same_as"])
    return goals


def robust_goals() -> dict[str, Any]:
    """The goals of ``experiment=robust``."""
    goals = experiment_goals("robust")
    if goals is None:
        raise KeyError(f"{GOALS_FILE} has no goals for experiment 'robust'")
    return goals


VERDICTS = ("**met** when the 95% Wilson lower bound is at or above the goal; **within interval** "
            "when only the point estimate is; **missed by x** otherwise (x = goal minus the point "
            "estimate). With few images the interval is wide, so a goal can be met only on "
            "enough images.")


def goal_row(rows: list[dict[str, Any]], model: str, goal: dict[str, Any]) -> dict[str, Any] | None:
    """``model``'s row for ``goal``: found by its ``select`` under its threat (see
    :mod:`advdefense.evaluation.select`), by its ``attack`` name in older result files."""
    return find(rows, model, goal["threat"], selector_of(goal), [goal["attack"]])


def verdict(row: dict[str, Any] | None, goal: float) -> str:
    """``met`` (95% Wilson lower bound >= goal), ``within interval`` (only the point estimate
    is), ``missed by x`` (x = goal - accuracy), or ``not run`` when ``row`` is None."""
    if row is None:
        return "not run"
    if row["accuracy_lo"] >= goal:
        return "met"
    if row["accuracy"] >= goal:
        return "within interval"
    return f"missed by {goal - row['accuracy']:.3f}"


def goals_section(rows: list[dict[str, Any]], goals: dict[str, Any] | None,
                  kinds: dict[str, str] | None = None,
                  members: dict[str, list[str]] | None = None,
                  threat_models: dict[str, dict[str, Any] | None] | None = None) -> list[str]:
    """The integrated model against each goal: ours with its CI and the verdict (:func:`verdict`).

    Each goal finds its row by its ``select`` (method and threat model, :func:`goal_row`).

    ``threat_models`` (``results.json`` meta: row -> declared threat model) keeps the stress
    rows (L0 budgets above the headline's k) out of the list of other attacks the headline worst
    case takes.

    Also compares the integrated model's worst cases with its best member's: among its own
    members (``members``: ensemble name -> its member names) where known, else among every
    evaluated model of kind ``member`` (``kinds``: model name -> ``member`` / ``ensemble``).
    Empty when there are no goals or the integrated model is not in this evaluation.
    """
    if not goals:
        return []
    idx, model = _index(rows), goals["model"]
    if not any(r["model"] == model for r in rows):
        return []
    body, listed = [], set()
    for g in goals["rows"]:
        r = goal_row(rows, model, g)
        listed |= {r["attack"]} if r is not None else set()
        word = verdict(r, g["goal"])
        body.append([g["label"], g["threat"], _f(g.get("paper")), f"{g['goal']:.3f}",
                     _ci(r), DASH if r is None else str(r["n"]),
                     f"**{word}**" if word.startswith("missed") else word])
    out = [f"## {goals['title']}", "", f"Integrated model: `{model}`. {goals['source']}", "",
           f"A goal is {VERDICTS}", ""]
    out += _md_table(["attack", "threat", "paper", "goal", "ours [95% CI]", "n", "verdict"], body)
    stress = {a for a, tm in (threat_models or {}).items()
              if tm and tm.get("set") == "l0" and tm.get("k", 0) > HEADLINE_K}
    stress |= {r["attack"] for r in rows if (r.get("threat_model") or {}).get("set") == "l0"
               and r["threat_model"].get("k", 0) > HEADLINE_K}
    extra = sorted({r["attack"] for r in rows if r["model"] == model} - listed - stress
                   - {WORST_DENSE, WORST_STRESS})
    if extra:
        out += ["", "Our worst case also takes the grid's other attacks (" +
                ", ".join(f"`{a}`" for a in extra) + "), so it is at least as strict as the "
                "goal's."]
    own = (members or {}).get(model)
    candidates = list(own) if own else [m for m, k in (kinds or {}).items() if k == "member"]
    for attack, threat, label in (
            ("worst_case", "all", "Worst case over all threats"),
            ("worst_case", "whitebox", "White-box worst case"),
            (WORST_DENSE, "whitebox", "White-box worst case over the dense attacks (L-inf and "
                                      "spatial; the sparse L0 attacks left out)")):
        out += _best_member_line(idx, model, candidates, threat, label, attack)
    return out + [""]


def _best_member_line(idx: dict[tuple[str, str, str], dict[str, Any]], model: str,
                      members: list[str], threat: str, label: str,
                      attack: str = "worst_case") -> list[str]:
    """One sentence: the integrated model's worst case under ``threat`` vs its best member's."""
    worst = {m: idx.get((m, attack, threat)) for m in members}
    worst = {m: r for m, r in worst.items() if r is not None}
    ours = idx.get((model, attack, threat))
    if not worst or ours is None:
        return []
    best = max(worst, key=lambda m: worst[m]["accuracy"])
    if ours["accuracy"] == 0 and worst[best]["accuracy"] == 0:
        verdict = "both are broken on every image, so the comparison shows nothing."
    elif ours["accuracy"] >= worst[best]["accuracy"]:
        verdict = "the integrated model is at least as robust as its best member."
    else:
        verdict = "the integrated model is **less robust than** its best member."
    return ["", f"{label}: `{model}` {_ci(ours)} vs its best member `{best}` "
                f"{_ci(worst[best])}: {verdict}"]


def robust_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per model: clean accuracy and the worst case per threat model, with 95% CIs."""
    idx = _index(rows)
    threats = [t for t in ("transfer", "whitebox", "blackbox", "all")
               if any(r["threat"] == t for r in rows)]
    dense = any(r["attack"] == WORST_DENSE for r in rows)
    stress = any(r["attack"] == WORST_STRESS and r["threat"] == "all" for r in rows)
    body = []
    for m in sorted({r["model"] for r in rows}):
        clean = find(rows, m, None, [CLEAN_SELECT], [CLEAN])
        cells = [_ci(clean)]
        for t in threats:
            cells.append(_ci(idx.get((m, "worst_case", t))))
        if dense:
            cells.append(_ci(idx.get((m, WORST_DENSE, "whitebox"))))
        if stress:
            cells.append(_ci(idx.get((m, WORST_STRESS, "all"))))
        body.append([f"`{m}`", *cells])
    header = ["model", "clean acc", *[f"worst case: {t}" for t in threats]]
    if dense:
        header.append("worst case: whitebox, without the L0 attacks")
    if stress:
        header.append(f"stress worst case: all, with the L0 rows above {HEADLINE_K} pixels")
    return _md_table(header, body) + [""]


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


def goals_summary(rows: list[dict[str, Any]], experiment: str | None) -> str | None:
    """One line: how many of ``experiment``'s goals are met, within interval, missed, not run.

    None when the experiment has no goals or its integrated model is not in ``rows``.
    """
    goals = experiment_goals(experiment)
    if not goals or not any(r["model"] == goals["model"] for r in rows):
        return None
    words = [verdict(goal_row(rows, goals["model"], g), g["goal"]) for g in goals["rows"]]
    counts = {w: sum(v.split(" by ")[0] == w for v in words)
              for w in ("met", "within interval", "missed", "not run")}
    return (f"goals of experiment={experiment} (`{goals['model']}`): " +
            ", ".join(f"{c} {w}" for w, c in counts.items() if c) + f" of {len(words)}")


def _ci(r: dict[str, Any] | None) -> str:
    if r is None:
        return DASH
    flag = " ⚠" if r.get("flags") else ""
    return f"{r['accuracy']:.3f} [{r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}]{flag}"


def full_grid(rows: list[dict[str, Any]]) -> list[str]:
    """Every row of the grid as a markdown table."""
    body = [[f"`{r['model']}`", r["threat"], r["attack"], str(r["n"]), _ci(r), _f(r["precision"]),
             _f(r["recall"]), _f(r["f1"]), _f(r["accuracy_at_80"]), str(r["confusion"]),
             ", ".join(r.get("flags") or []) or "-"] for r in rows]
    return _md_table(["model", "threat", "attack", "n", "accuracy [95% CI]", "precision", "recall",
                      "F1", "acc@80%", "confusion", "flags"], body) + [""]


def full_grid_section(rows: list[dict[str, Any]]) -> list[str]:
    """The full grid, folded (``<details>``): it is long; ``results.csv`` holds the same rows."""
    return ["## Full grid", "",
            f"All {len(rows)} rows; the same as [results.csv](results.csv) and results.json.", "",
            "<details>", f"<summary>Show the full grid ({len(rows)} rows)</summary>", "",
            *full_grid(rows), "</details>", ""]


def sanity_section(checks: list[dict[str, Any]]) -> list[str]:
    failed = [c for c in checks if not c["passed"]]
    out = [f"{len(checks) - len(failed)} of {len(checks)} checks passed.", ""]
    if failed:
        out += ["**Failed (the affected rows carry the flag and ⚠):**", ""]
        out += _md_table(["check", "model", "threat", "attack", "detail"],
                         [[c["check"], f"`{c['model']}`", c["threat"], c["attack"], c["detail"]]
                          for c in failed]) + [""]
    passed = sorted({c["check"] for c in checks if c["passed"]})
    if passed:
        out += ["Checks with passing instances: " + ", ".join(f"`{p}`" for p in passed), ""]
    return out


def _read(path: Path, default: Any) -> Any:
    return json.loads(path.read_text("utf-8")) if path.is_file() else default


def l0_section(curves: list[dict[str, Any]]) -> list[str]:
    """Sparse attacks by pixel budget: accuracy counting only successes within k pixels."""
    from advdefense.evaluation.l0_curves import BUDGETS, accuracy_at, median_l0

    if not curves:
        return []
    body = []
    for c in sorted(curves, key=lambda c: (c["attack"], c["model"], c["threat"])):
        med = median_l0(c)
        body.append([f"`{c['model']}`", c["attack"], c["threat"], str(c["n"]),
                     *(_f(accuracy_at(c, k)) for k in BUDGETS), _f(accuracy_at(c, None)),
                     DASH if med is None else f"{med:.0f}"])
    return ["## Sparse attacks by pixel budget", "",
            "Accuracy when a success counts only if the attack changed at most k of the 784 "
            "pixels; `any` is the row's accuracy. The local search has no pixel budget, so its "
            "`any` column includes images changed enough to be another digit; JSMA and sparse "
            "PGD stop at 78 pixels. Each column is what this attack's own search found within k "
            "pixels (an upper bound on robust accuracy at k, not a certificate); an attack that "
            "spends its whole budget on every image (sparse PGD: every success changes k = 78 "
            "pixels) says nothing about smaller budgets.", "",
            *_md_table(["model", "attack", "threat", "n", *(f"k={k}" for k in BUDGETS), "any",
                        "median pixels per success"], body), ""]


def certified_section(records: list[dict[str, Any]], goals: dict[str, Any] | None = None) -> list[str]:
    """Certified L0 accuracy of randomized-ablation models (``certified.json``), with its goals.

    Guarantees, not attack results: kept in their own section and never mixed into the
    empirical rows or worst cases.
    """
    if not records:
        return []
    radii = [r for r in (0, 1, 2, 4, 8, 12, 16, 20, 25, 30) if r <= max(records[0]["radii"])]
    body = []
    for rec in sorted(records, key=lambda r: r["model"]):
        at = dict(zip(rec["radii"], rec["certified_accuracy"], strict=True))
        body.append([f"`{rec['model']}`", str(rec["keep"]), str(rec["n_images"]), f"{rec['n']:,}",
                     f"{rec['alpha']:g}", _f(rec["smoothed_accuracy"]), _f(rec["abstain"]),
                     *(_f(at.get(r)) for r in radii), f"{rec['median_radius']:g}"])
    out = ["## Certified L0 accuracy (randomized ablation)", "",
           "Guarantees, not attack results: an image counts at radius r if the smoothed "
           "prediction is correct and no change of at most r of its 784 pixels can alter it, "
           "each certificate holding with probability >= 1 - alpha (Levine & Feizi's condition "
           "p_lower > 0.5 + Delta(r), p_lower a Clopper-Pearson bound from n ablations per image "
           "after n0 = 100 that pick the class). `keep`: pixels each ablation keeps; `smoothed "
           "acc`: correct and not abstained; the empirical rows of these models attack their "
           "EOT forward (see the model's `n_eval`).", "",
           *_md_table(["model", "keep", "n images", "samples n", "alpha", "smoothed acc",
                       "abstain", *(f"r={r}" for r in radii), "median radius"], body), ""]
    spec = (goals or {}).get("certified")
    if spec:
        mine = [r for r in records if r["model"].startswith(spec.get("model_prefix", ""))] or records
        best = max(mine, key=lambda r: r["certified_accuracy"][min(8, len(r["radii"]) - 1)])
        at = dict(zip(best["radii"], best["certified_accuracy"], strict=True))
        rows = []
        for g in spec["rows"]:
            ours, n = at.get(g["radius"]), best["n_images"]
            row = None
            if ours is not None:  # the certified count over n images, with its Wilson interval
                lo, hi = wilson(round(ours * n), n)
                row = {"accuracy": ours, "accuracy_lo": lo, "accuracy_hi": hi}
            word = verdict(row, g["goal"])
            rows.append([g["label"], f"{g['goal']:.2f}", _ci(row) if row else DASH, str(n),
                         f"**{word}**" if word.startswith("missed") else word, g["anchor"]])
        out += [f"Goals (model `{best['model']}`; {spec['source']})", "",
                *_md_table(["goal", "target", "ours (95% CI)", "n", "verdict", "anchor"], rows), ""]
    return out


def make_plots(out_dir: Path, rows: list[dict[str, Any]], sweeps: dict[str, Any],
               examples: dict[str, Any], curves: list[dict[str, Any]] | None = None,
               kinds: dict[str, str] | None = None) -> list[Path]:
    """All PNG plots into ``out_dir/plots``; returns the written paths.

    ``kinds`` (model name -> ``member`` / ``ensemble``) groups the line plots' panels by model
    family (see :func:`advdefense.evaluation.plots.family`).
    """
    from advdefense.evaluation import plots

    pdir = out_dir / "plots"
    made = [plots.plot_eps(sweeps.get("eps", []), a, pdir / f"eps_{a}.png", kinds)
            for a in ("fgsm", "pgd")]  # by the sweep rows' method, whatever their names
    made.append(plots.plot_spatial(sweeps.get("spatial", []), ("angle",), pdir / "rotation.png",
                                   kinds))
    made.append(plots.plot_spatial(sweeps.get("spatial", []), ("dx", "dy"), pdir / "shift.png",
                                   kinds))
    cells = examples.get("cells", [])
    for attack in sorted({c["attack"] for c in cells}):
        made.append(plots.plot_examples(examples["originals"], cells, attack,
                                        pdir / f"examples_{attack}.png",
                                        labels=examples.get("labels")))
    for attack in sorted({c["attack"] for c in curves or []}):
        made.append(plots.plot_l0(curves or [], attack, pdir / f"l0_{attack}.png", kinds=kinds))
    made.append(plots.plot_confusions(rows, pdir / "confusion.png"))
    made.append(plots.plot_certified(_read(out_dir / "certified.json", []), pdir / "certified_l0.png"))
    return [p for p in made if p is not None]


def _budget_lines(meta: dict[str, Any]) -> list[str]:
    """The header's statement of budgeted attacks (``eval.attack_n``), if any."""
    budget = meta.get("attack_n") or {}
    if not budget:
        return ["Every attack ran on all n images under every threat model.", ""]
    parts = ", ".join(f"`{a}` on {k}" for a, k in sorted(budget.items()))
    return [f"**Time budget (`eval.attack_n`): attacks crafted against each model (white-box, "
            f"black-box) ran on a nested stratified subset of the n images: {parts}; all other "
            "rows (clean, transfer, the other attacks) on all n. Each row's `n` says how many "
            "images it covers; a worst case covers only the images every attack it combines "
            "ran on.**", ""]


def write_report(out_dir: str | Path, models_dir: str | Path | None = None,
                 plots: bool = True, experiment: str | None = None) -> Path:
    """Write ``report.md`` (and the plots) from the result files in ``out_dir``.

    ``experiment``: whose goals to judge (default: ``meta.experiment`` in results.json, which
    ``train.py experiment=<name>`` records); no goals section when it has none.
    """
    from advdefense.evaluation.results import read_json

    out_dir = Path(out_dir)
    data = read_json(out_dir / "results.json")
    rows, meta = data["rows"], data.get("meta", {})
    experiment = experiment or meta.get("experiment")
    sweeps = _read(out_dir / "sweeps.json", {})
    checks = _read(out_dir / "checks.json", [])
    curves = _read(out_dir / "l0.json", [])
    made = (make_plots(out_dir, rows, sweeps, _read(out_dir / "examples.json", {}), curves,
                       meta.get("kinds"))
            if plots else [])
    paper = paper_tables()
    lines = ["# Evaluation report", "",
             *([f"Experiment: `{experiment}`.", ""] if experiment else []),
             f"Test images: n = {meta.get('n')}; models: {', '.join(meta.get('models', []))}; "
             f"threat models: {', '.join(meta.get('threats', []))}; transfer surrogate: "
             f"`{meta.get('surrogate')}`; models dir: `{models_dir or meta.get('models_dir')}`.", "",
             *_budget_lines(meta),
             "Accuracy, precision and recall (positive class = digit 7) have 95% Wilson intervals "
             "in results.json; accuracy@80% abstains on the 20% least confident examples "
             "(confidence = max logit, as the UAE kit). `worst_case` counts an example as robust "
             "only if every attack of the threat model (clean included) failed on it; threat "
             "`all` takes the worst case over every threat model. ⚠ marks rows flagged by a sanity "
             "check (see the end).", "",
             "## Robust accuracy (worst case per threat model)", "", *robust_summary(rows),
             *goals_section(rows, experiment_goals(experiment), meta.get("kinds"),
                            meta.get("members"), meta.get("threat_models")),
             *l0_section(curves),
             *certified_section(_read(out_dir / "certified.json", []),
                               experiment_goals(experiment)),
             "## The paper's tables beside ours", "",
             *[f"* {n}" for n in paper["notes"]], "",
             *single_model_tables(rows, paper), *integrated_tables(rows, paper),
             *full_grid_section(rows),
             "## Sanity checks against gradient masking", "", *sanity_section(checks)]
    from advdefense.evaluation.seeds import seeds_section

    lines += seeds_section(rows)  # models trained with several seeds: <name>-s<seed>
    if made:
        lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in made] + [""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
