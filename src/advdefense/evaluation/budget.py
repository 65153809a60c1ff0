"""Per-model time budgets: which images each attack row is crafted on (issue 14 C).

``eval.attack_n`` limits an attack row to the first ``k`` images of a nested stratified order
(:func:`advdefense.sampling.stratified_sample`, ``nested=True``), for every model. ``eval.full_n`` names models
(default: the goal model of ``eval.experiment``) and rows (default: the rows its goals judge)
that ignore that budget: for those models those rows run on all n images, except that a cell of
the query-only threat model (``blackbox``: Sparse-RS, the local search; 10,000 queries per digit
take hours on a CPU) still budgeted on this device runs on at least ``query_n`` stratified images,
not all n. (The spatial grids query the model too, but they are a small exhaustive search of the
white-box and transfer threat models: they run on all n.) On CUDA ``eval.attack_n_cuda`` (default null) leaves no
budget at all, so every row covers all n anyway.

The other rows of a full-n model keep their budget; its worst cases are completed with a
cascade (:mod:`advdefense.evaluation.cascade_worst`), so they too cover all n (white-box) or the
query-only rows' n (worst cases that take a query-only row).

Everything here is plain Python: :func:`advdefense.evaluation.settings.eval_budget` reads the
config nodes and calls :func:`full_n_rule`; :class:`~advdefense.evaluation.settings.EvalSettings`
carries the rule (``full_n``) next to ``attack_n``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from advdefense.checks import ConfigError

#: attack rows of a goals table that are not attack rows of the grid
NOT_ROWS = frozenset({"none", "worst_case", "worst_case_dense", "worst_case_stress"})
#: the threat model of query-only attacks (advdefense.evaluation.threats.THREATS)
QUERY_THREAT = "blackbox"


@dataclass(frozen=True)
class FullN:
    """Models whose listed rows ignore ``eval.attack_n`` (see the module docstring).

    Attributes:
        models: registry names.
        rows: attack row names that run on all n for those models.
        query_n: images a budgeted black-box (query-only) cell of those models runs on at
            least (None: all n).
        cascade: complete those models' worst cases with a cascade over their other rows.
    """

    models: frozenset[str]
    rows: frozenset[str]
    query_n: int | None = 200
    cascade: bool = True


@dataclass(frozen=True)
class Budget:
    """The time budget: row -> most images per model (``eval.attack_n``), and the full-n rule.

    ``attack_n`` holds only real limits (fewer than the evaluated images); a row absent from it
    runs on all images for every model.
    """

    attack_n: Mapping[str, int] = field(default_factory=dict)
    full_n: FullN | None = None

    def is_full(self, model: str) -> bool:
        """Whether ``model`` is one of ``eval.full_n``'s models (its worst cases are completed)."""
        return self.full_n is not None and model in self.full_n.models

    def full_k(self, name: str, threat: str) -> int | None:
        """The images row ``name`` covers under ``threat`` when it ignores the budget: None
        (all n), or for a budgeted black-box (query-only) cell ``max(attack_n[name], query_n)``.

        The threat dispatched on is the grid threat whose attacks only query the model
        (``blackbox``), never the row name."""
        base = self.attack_n.get(name)
        query_n = None if self.full_n is None else self.full_n.query_n
        if base is None or query_n is None or threat != QUERY_THREAT:
            return None
        return max(base, query_n)

    def k(self, model: str, name: str, threat: str) -> int | None:
        """The most images row ``name`` is crafted on against ``model`` under ``threat`` (None:
        all; transfer cells are never budgeted, see :meth:`Grid.subset`)."""
        if self.is_full(model) and name in self.full_n.rows:  # type: ignore[union-attr]
            return self.full_k(name, threat)
        return self.attack_n.get(name)

    def describe(self, n: int, summary: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """``results.json`` meta of the full-n rule (None when there is none); ``summary``:
        :func:`advdefense.evaluation.cascade_worst.worst_cases`'s (cascade, worst-case n)."""
        if self.full_n is None or not self.full_n.models:
            return None
        summary = summary or {}
        return {"models": sorted(self.full_n.models), "rows": sorted(self.full_n.rows),
                "query_n": None if self.full_n.query_n is None else min(self.full_n.query_n, n),
                "cascade": dict(summary.get("cascade") or {}),
                "worst_case_n": dict(summary.get("worst_case_n") or {})}


def as_budget(attack_n: Mapping[str, int | None] | Budget | None, n: int) -> Budget:
    """A :class:`Budget` with the limits below ``n`` only (a dict is ``eval.attack_n``)."""
    budget = attack_n if isinstance(attack_n, Budget) else Budget(dict(attack_n or {}))
    limits = {str(k): int(v) for k, v in budget.attack_n.items() if v is not None and int(v) < n}
    return Budget(limits, budget.full_n)


def _names(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable) or not all(
            isinstance(v, str) for v in value):
        raise ConfigError(key, value, "a list of names, or null for the default")
    return [str(v) for v in value]


def _goal_rows(goals: Mapping[str, Any] | None,
               rows: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """The configured rows the goals judge: each goal's first row matching its ``select``
    (method and threat model, :mod:`advdefense.evaluation.select`); a row without a
    description (or a goal without ``select``) by the goal's ``attack`` name. The clean row and
    the worst cases are no attack rows."""
    from advdefense.evaluation.select import matches, selector_of

    out: list[str] = []
    for g in (goals or {}).get("rows", []):
        sels = selector_of(g)
        if g.get("attack") in NOT_ROWS or any(s.get("method") in NOT_ROWS for s in sels):
            continue
        typed = [name for name, d in rows.items() if d is not None]
        hit = next((name for s in sels for name in typed if matches(rows[name], s)), None)
        if hit is None and g.get("attack") in rows and (not sels or rows[g["attack"]] is None):
            hit = g["attack"]
        if hit is not None and hit not in out:
            out.append(hit)
    return out


def full_n_rule(node: Mapping[str, Any] | None, goals: Mapping[str, Any] | None,
                rows: Mapping[str, Mapping[str, Any] | None] | Iterable[str]) -> FullN | None:
    """``eval.full_n`` (a plain mapping) as a :class:`FullN`, checked; None when it names no model.

    Args:
        node: ``{"models", "rows", "query_n", "cascade"}``; None = all defaults.
        goals: the experiment's goals (``resources/robust_goals.json`` entry) or None:
            ``models: null`` means ``[goals["model"]]``, ``rows: null`` the configured rows the
            goals judge (found by each goal's ``select``, see :func:`_goal_rows`).
        rows: the configured attack rows: name -> ``{"method", "threat_model"}`` (a result
            row's description, :func:`advdefense.evaluation.select.describe`), or just names.
            An explicitly listed row must be one of them.
    """
    rows = dict(rows) if isinstance(rows, Mapping) else dict.fromkeys(rows)
    node = dict(node or {})
    unknown = set(node) - {"models", "rows", "query_n", "cascade"}
    if unknown:
        raise ConfigError(f"eval.full_n.{sorted(unknown)[0]}", node[sorted(unknown)[0]],
                          "one of models, rows, query_n, cascade")
    configured = set(rows)
    models = _names(node.get("models"), "eval.full_n.models")
    names = _names(node.get("rows"), "eval.full_n.rows")
    if names is not None and (bad := sorted(set(names) - configured)):
        raise ConfigError("eval.full_n.rows", names,
                          f"configured attack rows (eval.attacks), not {bad}")
    if models is None:
        models = [goals["model"]] if goals and goals.get("model") else []
    if names is None:
        names = _goal_rows(goals, rows)
    query_n = node.get("query_n", 200)
    if query_n is not None and (isinstance(query_n, bool) or not isinstance(query_n, int)
                                or query_n < 1):
        raise ConfigError("eval.full_n.query_n", query_n,
                          "a positive integer (images), or null for all n")
    cascade = node.get("cascade", True)
    if not isinstance(cascade, bool):
        raise ConfigError("eval.full_n.cascade", cascade, "true or false")
    if not models:
        return None
    return FullN(frozenset(models), frozenset(names), query_n, cascade)


def full_n_lines(meta: Mapping[str, Any]) -> list[str]:
    """report.md header lines stating the full-n rule and its cascades (empty when none)."""
    full, n = meta.get("full_n"), meta.get("n")
    if not full or not (meta.get("attack_n") or {}):
        return []
    rows = ", ".join(f"`{r}`" for r in full["rows"]) or "none"
    models = ", ".join(f"`{m}`" for m in full["models"])
    out = [f"**Full test set (`eval.full_n`) for {models}: the rows {rows} ignore the time budget "
           f"and ran on all n = {n} images"
           + (f", except black-box (query-only) rows still budgeted, which ran on "
              f"{full['query_n']} stratified images (`eval.full_n.query_n`; all n on CUDA)"
              if full["query_n"]
              else "") + "."]
    for model in full["models"]:
        threats = (full.get("cascade") or {}).get(model) or {}
        parts = "; ".join(f"{t}: " + ", ".join(f"`{a}` on {k} more" for a, k in done.items())
                          for t, done in sorted(threats.items()) if done)
        if parts:
            out.append(f"The worst cases of `{model}` are completed with a cascade: each other "
                       "attack also ran on the images still robust to the attacks before it, "
                       f"never on an image already broken ({parts}).")
        ns = (full.get("worst_case_n") or {}).get(model) or {}
        if ns:
            out.append("Its worst cases cover: " + ", ".join(
                f"`{k}` n = {v}" for k, v in sorted(ns.items())) + ".")
    return [" ".join(out) + "**", ""]

