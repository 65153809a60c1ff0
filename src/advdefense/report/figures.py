"""The report's PNG plots (:mod:`advdefense.evaluation.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advdefense.report.common import read_or


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
    made.append(plots.plot_certified(read_or(out_dir / "certified.json", []), pdir / "certified_l0.png"))
    return [p for p in made if p is not None]
