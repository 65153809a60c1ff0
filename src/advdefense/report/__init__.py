"""The evaluation report: the paper's Tables I-VII with our numbers beside them, the goals of
its own experiment (if it has any) with honest verdicts, the full grid (folded), the sanity
checks and the plots; and the console summary. Reads the pipeline's files; never runs a model.

    from advdefense.report import write_report
    write_report("logs/evaluate/runs/<run>")   # -> <run>/report.md + <run>/plots/*.png

By concept: :mod:`~advdefense.report.tables` (the paper's tables beside ours, the robust
summary, the console headline, the full grid), :mod:`~advdefense.report.goals` (an experiment's
goals and verdicts, certified L0 accuracy), :mod:`~advdefense.report.sections` (sanity checks,
sparse attacks by pixel budget), :mod:`~advdefense.report.figures` (the plots) and
:mod:`~advdefense.report.common` (formatting). This module assembles ``report.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advdefense.evaluation.budget import full_n_lines
from advdefense.io import atomic_write_text
from advdefense.report.common import read_or
from advdefense.report.figures import make_plots
from advdefense.report.goals import (
    certified_section,
    experiment_goals,
    goal_row,
    goals_section,
    goals_summary,
    robust_goals,
    verdict,
)
from advdefense.report.sections import l0_section, sanity_section
from advdefense.report.tables import (
    full_grid,
    full_grid_section,
    headline_table,
    integrated_tables,
    paper_tables,
    robust_summary,
    single_model_tables,
)

__all__ = ["certified_section", "experiment_goals", "full_grid", "full_grid_section", "goal_row",
           "goals_section", "goals_summary", "headline_table", "integrated_tables", "l0_section",
           "make_plots", "paper_tables", "robust_goals", "robust_summary", "sanity_section",
           "single_model_tables", "verdict", "write_report"]


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
            "ran on.**", "", *full_n_lines(meta)]


def write_report(out_dir: str | Path, models_dir: str | Path | None = None,
                 plots: bool = True, experiment: str | None = None,
                 plot_cache: str | Path | None = None) -> Path:
    """Write ``report.md`` (and the plots) from the result files in ``out_dir``.

    ``experiment``: whose goals to judge (default: ``meta.experiment`` in results.json, which
    ``train.py experiment=<name>`` records); no goals section when it has none.
    ``plot_cache``: a folder where drawn plots are kept, so a rerun with the same data copies
    them instead of drawing (see :mod:`advdefense.report.figures`); None = always draw.
    """
    from advdefense.evaluation.results import read_json

    out_dir = Path(out_dir)
    data = read_json(out_dir / "results.json")
    rows, meta = data["rows"], data.get("meta", {})
    experiment = experiment or meta.get("experiment")
    sweeps = read_or(out_dir / "sweeps.json", {})
    checks = read_or(out_dir / "checks.json", [])
    curves = read_or(out_dir / "l0.json", [])
    made = (make_plots(out_dir, rows, sweeps, read_or(out_dir / "examples.json", {}), curves,
                       meta.get("kinds"), plot_cache)
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
             *certified_section(read_or(out_dir / "certified.json", []),
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
