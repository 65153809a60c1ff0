"""PNG plots of evaluation results (matplotlib, Agg backend); reads result data, runs no model.

Every function takes plain data (rows / dicts as written by the pipeline) and a file path,
writes the PNG atomically and returns the path.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from advdefense.evaluation.l0_curves import accuracy_at  # noqa: E402
from advdefense.registry import atomic_write_bytes  # noqa: E402

STYLES = {"whitebox": "-", "transfer": "--", "blackbox": ":"}


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_eps(rows: list[dict[str, Any]], attack: str, path: Path) -> Path | None:
    """Accuracy vs eps for ``attack``, one line per model and threat (eps-sweep rows)."""
    curves: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["attack"] == attack and r["eps"] is not None:
            curves[(r["model"], r["threat"])].append((r["eps"], r["accuracy"]))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model, threat), pts in sorted(curves.items()):
        e, a = zip(*sorted(pts), strict=True)
        ax.plot(e, a, STYLES.get(threat, "-"), marker="o", ms=3, label=f"{model} ({threat})")
    ax.set(xlabel="eps (L-inf, pixel units)", ylabel="accuracy", ylim=(-0.02, 1.02),
           title=f"{attack.upper()}: accuracy vs eps (n={rows[0]['n']})")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_spatial(rows: list[dict[str, Any]], kinds: tuple[str, ...], path: Path) -> Path | None:
    """Accuracy vs fixed rotation angle (``('angle',)``) or shift (``('dx', 'dy')``)."""
    curves: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["kind"] in kinds:
            curves[(r["model"], r["kind"])].append((r["value"], r["accuracy"]))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model, kind), pts in sorted(curves.items()):
        v, a = zip(*sorted(pts), strict=True)
        ax.plot(v, a, "-" if kind != "dy" else "--", marker="o", ms=3,
                label=model if len(kinds) == 1 else f"{model} ({kind})")
    unit = "degrees" if kinds == ("angle",) else "pixels"
    ax.set(xlabel=f"{'/'.join(kinds)} ({unit})", ylabel="accuracy", ylim=(-0.02, 1.02),
           title=f"accuracy vs {' and '.join(kinds)}")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_examples(originals: list[list[float]], cells: list[dict[str, Any]], attack: str,
                  path: Path, k: int = 4) -> Path | None:
    """Original | adversarial | difference for the first ``k`` examples of one attack.

    Uses the first cell of ``attack`` (white-box preferred, else transfer, else black-box).
    """
    ranked = sorted((c for c in cells if c["attack"] == attack),
                    key=lambda c: list(STYLES).index(c["threat"]) if c["threat"] in STYLES else 9)
    if not ranked:
        return None
    cell = ranked[0]
    adv = cell["examples"]["adv"][:k]
    fig, axes = plt.subplots(len(adv), 3, figsize=(5, 1.7 * len(adv)), squeeze=False)
    for i, a in enumerate(adv):
        x, xa = np.reshape(originals[i], (28, 28)), np.reshape(a, (28, 28))
        for j, (img, cmap, lim, title) in enumerate((
                (x, "gray", (0, 1), "original"), (xa, "gray", (0, 1), f"adv (pred {cell['pred'][i]})"),
                (xa - x, "seismic", (-1, 1), "difference"))):
            axes[i, j].imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1])
            axes[i, j].set_title(title, fontsize=7)
            axes[i, j].axis("off")
    fig.suptitle(f"{attack} on {cell['model']} ({cell['threat']})", fontsize=8)
    return _save(fig, path)


def plot_l0(curves: list[dict[str, Any]], attack: str, path: Path, k_max: int = 160) -> Path | None:
    """Accuracy vs pixel budget under one sparse attack, a step curve per model and threat.

    ``curves``: records of :func:`advdefense.evaluation.l0_curves.l0_curves`; the accuracy at
    budget k counts an image as fooled only if the attack changed at most k pixels.
    """
    mine = [c for c in curves if c["attack"] == attack and c["n"]]
    if not mine:
        return None
    ks = np.arange(0, k_max + 1)
    several = len({c["threat"] for c in mine}) > 1  # line styles tell threats apart only then
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in sorted(mine, key=lambda c: (c["model"], c["threat"])):
        acc = [accuracy_at(c, int(k)) for k in ks]
        ax.step(ks, acc, STYLES.get(c["threat"], "-") if several else "-", where="post",
                label=f"{c['model']} ({c['threat']}, n={c['n']})")
    ax.set(xlabel="pixel budget k (changed pixels, of 784)", ylabel="accuracy", xlim=(0, k_max),
           ylim=(-0.02, 1.02), title=f"{attack}: accuracy when only successes within k pixels count")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusions(rows: list[dict[str, Any]], path: Path, threat: str = "all") -> Path | None:
    """Confusion matrices per model: clean, and the worst case over ``threat``."""
    models = sorted({r["model"] for r in rows})
    pick = {(r["model"], r["attack"], r["threat"]): r for r in rows}
    if not models:
        return None
    fig, axes = plt.subplots(2, len(models), figsize=(2.2 * len(models), 4.4), squeeze=False)
    for j, m in enumerate(models):
        clean = next((r for (mm, a, _), r in pick.items() if mm == m and a == "none"), None)
        worst = pick.get((m, "worst_case", threat)) or next(
            (r for (mm, a, _), r in pick.items() if mm == m and a == "worst_case"), None)
        for i, (r, label) in enumerate(((clean, "clean"), (worst, "worst case"))):
            ax = axes[i, j]
            ax.axis("off")
            if r is None:
                continue
            cm = np.asarray(r["confusion"])
            ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.sum()))
            for (a, b), v in np.ndenumerate(cm):
                ax.text(b, a, str(v), ha="center", va="center", fontsize=8)
            ax.set_title(f"{m}\n{label} ({r['threat']})", fontsize=7)
    fig.suptitle("confusion [[TN, FP], [FN, TP]]: rows true 6/7, columns predicted 6/7", fontsize=8)
    return _save(fig, path)


def plot_certified(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Certified L0 accuracy vs radius, one step curve per randomized-ablation model.

    ``records``: ``certified.json`` (:mod:`advdefense.evaluation.certified`). Certificates,
    plotted apart from the empirical L0 curves (``l0_<attack>.png``).
    """
    if not records:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rec in sorted(records, key=lambda r: r["model"]):
        ax.step(rec["radii"], rec["certified_accuracy"], "-", where="post",
                label=f"{rec['model']} (keep {rec['keep']}, n={rec['n_images']}, N={rec['n']:,})")
    ax.set(xlabel="L0 radius (changed pixels, of 784)", ylabel="certified accuracy",
           xlim=(0, max(max(r["radii"]) for r in records)), ylim=(-0.02, 1.02),
           title="Certified L0 accuracy (randomized ablation; guarantees, not attacks)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
