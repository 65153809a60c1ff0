"""Goals of an experiment (package data ``resources/robust_goals.json``) with honest verdicts,
and the certified L0 section with its goals."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from advdefense.evaluation.metrics import wilson
from advdefense.evaluation.select import find, selector_of
from advdefense.evaluation.worst_case import HEADLINE_K, WORST, WORST_DENSE, WORST_STRESS
from advdefense.report.common import DASH, ci, fmt, index_rows, md_table

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
    idx, model = index_rows(rows), goals["model"]
    if not any(r["model"] == model for r in rows):
        return []
    body, listed = [], set()
    for g in goals["rows"]:
        r = goal_row(rows, model, g)
        listed |= {r["attack"]} if r is not None else set()
        word = verdict(r, g["goal"])
        body.append([g["label"], g["threat"], fmt(g.get("paper")), f"{g['goal']:.3f}",
                     ci(r), DASH if r is None else str(r["n"]),
                     f"**{word}**" if word.startswith("missed") else word])
    out = [f"## {goals['title']}", "", f"Integrated model: `{model}`. {goals['source']}", "",
           f"A goal is {VERDICTS}", ""]
    out += md_table(["attack", "threat", "paper", "goal", "ours [95% CI]", "n", "verdict"], body)
    out += worst_case_note(rows, model, goals)
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


def worst_case_note(rows: list[dict[str, Any]], model: str, goals: dict[str, Any]) -> list[str]:
    """Below the goals table: which n a worst-case goal (its ``select`` method ``worst_case``)
    is judged on, and the white-box worst case on its own (larger) n when they differ (a
    full-n model's worst cases, ``eval.full_n``)."""
    out: list[str] = []
    white = find(rows, model, "whitebox", [{"method": WORST}], [WORST])
    for g in goals.get("rows", []):
        sels = selector_of(g)
        if not (any(s.get("method") == WORST for s in sels) or (not sels and g["attack"] == WORST)):
            continue
        judged = goal_row(rows, model, g)
        if judged is None:
            continue
        out += ["", f"The goal '{g['label']}' is judged on n = {judged['n']}: the images every "
                "combined attack ran on."]
        if white is not None and white is not judged and white["n"] > judged["n"]:
            out[-1] += (f" The white-box worst case alone covers n = {white['n']}: "
                        f"{white['accuracy']:.3f} [{white['accuracy_lo']:.3f}, "
                        f"{white['accuracy_hi']:.3f}], {verdict(white, g['goal'])} against the "
                        "same goal.")
    return out


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
    return ["", f"{label}: `{model}` {ci(ours)} vs its best member `{best}` "
                f"{ci(worst[best])}: {verdict}"]


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
                     f"{rec['alpha']:g}", fmt(rec["smoothed_accuracy"]), fmt(rec["abstain"]),
                     *(fmt(at.get(r)) for r in radii), f"{rec['median_radius']:g}"])
    out = ["## Certified L0 accuracy (randomized ablation)", "",
           "Guarantees, not attack results: an image counts at radius r if the smoothed "
           "prediction is correct and no change of at most r of its 784 pixels can alter it, "
           "each certificate holding with probability >= 1 - alpha (Levine & Feizi's condition "
           "p_lower > 0.5 + Delta(r), p_lower a Clopper-Pearson bound from n ablations per image "
           "after n0 = 100 that pick the class). `keep`: pixels each ablation keeps; `smoothed "
           "acc`: correct and not abstained; the empirical rows of these models attack their "
           "EOT forward (see the model's `n_eval`).", "",
           *md_table(["model", "keep", "n images", "samples n", "alpha", "smoothed acc",
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
            rows.append([g["label"], f"{g['goal']:.2f}", ci(row) if row else DASH, str(n),
                         f"**{word}**" if word.startswith("missed") else word, g["anchor"]])
        out += [f"Goals (model `{best['model']}`; {spec['source']})", "",
                *md_table(["goal", "target", "ours (95% CI)", "n", "verdict", "anchor"], rows), ""]
    return out
