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
from advdefense.io import atomic_write_bytes  # noqa: E402

STYLES = {"whitebox": "-", "transfer": "--", "blackbox": ":"}
MAX_SERIES = 8  # lines per panel; models beyond it go to another panel of the same family
COLORS = plt.get_cmap("tab10").colors  # 10 distinct colours; a panel uses at most MAX_SERIES
DIGITS = ("6", "7")  # label / prediction 0 and 1 as the digits they stand for


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def family(model: str, kinds: dict[str, str] | None = None) -> str:
    """The panel a model's lines go to: ``ensembles``, or its preprocessing (``blur``).

    ``kinds``: model name -> ``member`` / ``ensemble`` (results.json meta). Without it, a name
    with no ``-`` (``stacker``, ``vote``) is an ensemble; a member is ``<preprocess>-<defense>``.
    """
    kind = (kinds or {}).get(model)
    if kind == "ensemble" or (kind is None and "-" not in model):
        return "ensembles"
    return model.split("-", 1)[0]


def panels(series: list[tuple[str, Any]], kinds: dict[str, str] | None = None,
           max_series: int = MAX_SERIES) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Split ``(model, key)`` series into panels of at most ``max_series``, one family each.

    A model's series stay in one panel (unless it alone has more than ``max_series``); a family
    with more is split into numbered panels. Returns ``[(title, series), ...]``, members first
    (by family), then ensembles.
    """
    groups: dict[str, dict[str, list[tuple[str, Any]]]] = defaultdict(dict)
    for model, key in sorted(series, key=str):
        groups[family(model, kinds)].setdefault(model, []).append((model, key))
    out: list[tuple[str, list[tuple[str, Any]]]] = []
    for fam in sorted(groups, key=lambda f: (f == "ensembles", f)):
        chunks: list[list[tuple[str, Any]]] = [[]]
        for lines in groups[fam].values():
            if chunks[-1] and len(chunks[-1]) + len(lines) > max_series:
                chunks.append([])
            chunks[-1].extend(lines)
        chunks = [c[i:i + max_series] for c in chunks for i in range(0, len(c), max_series)]
        title = fam if fam == "ensembles" else f"{fam}-* members"
        out += [(title if len(chunks) == 1 else f"{title} ({i + 1}/{len(chunks)})", c)
                for i, c in enumerate(chunks)]
    return out


def _n_text(ns: list[int]) -> str:
    """``n=64`` or ``n=32-64`` for the images behind each point."""
    lo, hi = min(ns), max(ns)
    return f"n={lo}" if lo == hi else f"n={lo}-{hi}"


def _facets(count: int, cols: int = 2) -> tuple[Any, list[Any]]:
    ncols = min(cols, count)
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.axis("off")
    return fig, flat[:count]


def _legend(ax: Any) -> None:
    """Below the axes, so it never covers the data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=7,
              frameon=False)


def _line_plot(curves: dict[tuple[str, str], list[tuple[float, float]]], ns: list[int],
               kinds: dict[str, str] | None, style_of: Any, label_of: Any, title: str,
               xlabel: str, path: Path, step: bool = False) -> Path:
    """Faceted line plot: one panel per model family, colour per model, style per key."""
    parts = panels(list(curves), kinds)
    fig, axes = _facets(len(parts))
    for ax, (panel, series) in zip(axes, parts, strict=True):
        models = dict.fromkeys(m for m, _ in series)
        colours = {m: COLORS[i % len(COLORS)] for i, m in enumerate(models)}
        for model, key in series:
            x, y = zip(*sorted(curves[(model, key)]), strict=True)
            kw = {"color": colours[model], "label": label_of(model, key)}
            if step:
                ax.step(x, y, style_of(key), where="post", **kw)
            else:
                ax.plot(x, y, style_of(key), marker="o", ms=3, **kw)
        ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(-0.02, 1.02), title=panel)
        ax.grid(alpha=0.3)
        _legend(ax)
    fig.suptitle(f"{title} ({_n_text(ns)} test images)", fontsize=11)
    return _save(fig, path)


def plot_eps(rows: list[dict[str, Any]], attack: str, path: Path,
             kinds: dict[str, str] | None = None) -> Path | None:
    """Accuracy vs eps for the sweep rows of method ``attack`` (``fgsm``, ``pgd``; rows without
    a method: by name): a panel per model family, a line per model and threat (colour = model,
    line style = threat). ``rows``: eps-sweep rows."""
    curves: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    ns = []
    for r in rows:
        if r.get("method", r["attack"]) == attack and r["eps"] is not None:
            curves[(r["model"], r["threat"])].append((r["eps"], r["accuracy"]))
            ns.append(r["n"])
    if not curves:
        return None
    return _line_plot(curves, ns, kinds, lambda t: STYLES.get(t, "-"),
                      lambda m, t: f"{m} ({t})", f"{attack.upper()}: accuracy vs eps",
                      "eps (L-inf, pixel units)", path)


def plot_spatial(rows: list[dict[str, Any]], kinds: tuple[str, ...], path: Path,
                 model_kinds: dict[str, str] | None = None) -> Path | None:
    """Accuracy vs fixed rotation angle (``('angle',)``) or shift (``('dx', 'dy')``), a panel
    per model family (``model_kinds``: model name -> member / ensemble)."""
    curves: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    ns = []
    for r in rows:
        if r["kind"] in kinds:
            curves[(r["model"], r["kind"])].append((r["value"], r["accuracy"]))
            ns.append(r["n"])
    if not curves:
        return None
    unit = "degrees" if kinds == ("angle",) else "pixels"
    return _line_plot(curves, ns, model_kinds, lambda k: "--" if k == "dy" else "-",
                      (lambda m, k: m) if len(kinds) == 1 else (lambda m, k: f"{m} ({k})"),
                      f"accuracy vs {' and '.join(kinds)}", f"{'/'.join(kinds)} ({unit})", path)


def plot_examples(originals: list[list[float]], cells: list[dict[str, Any]], attack: str,
                  path: Path, k: int = 4, labels: list[int] | None = None) -> Path | None:
    """Original | adversarial | difference for the first ``k`` examples of one attack.

    Uses the first cell of ``attack`` (white-box preferred, else transfer, else black-box).
    Labels and predictions are shown as digits (0 -> 6, 1 -> 7); the difference (adversarial
    minus original, in [-1, 1]) has a colour bar.
    """
    ranked = sorted((c for c in cells if c["attack"] == attack),
                    key=lambda c: list(STYLES).index(c["threat"]) if c["threat"] in STYLES else 9)
    if not ranked:
        return None
    cell = ranked[0]
    adv = cell["examples"]["adv"][:k]
    fig, axes = plt.subplots(len(adv), 3, figsize=(5.6, 1.8 * len(adv)), squeeze=False,
                             layout="constrained")
    for i, a in enumerate(adv):
        x, xa = np.reshape(originals[i], (28, 28)), np.reshape(a, (28, 28))
        true = f": digit {DIGITS[labels[i]]}" if labels is not None else ""
        for j, (img, cmap, lim, title) in enumerate((
                (x, "gray", (0, 1), f"original{true}"),
                (xa, "gray", (0, 1), f"adversarial: predicted {DIGITS[cell['pred'][i]]}"),
                (xa - x, "seismic", (-1, 1), "difference (adv - original)"))):
            im = axes[i, j].imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1])
            axes[i, j].set_title(title, fontsize=7)
            axes[i, j].axis("off")
        fig.colorbar(im, ax=axes[i, 2], fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.suptitle(f"{attack} on {cell['model']} ({cell['threat']}): the first n={len(adv)} "
                 "test images", fontsize=8)
    return _save(fig, path)


def plot_l0(curves: list[dict[str, Any]], attack: str, path: Path, k_max: int = 160,
            kinds: dict[str, str] | None = None) -> Path | None:
    """Accuracy vs pixel budget under one sparse attack, a step curve per model and threat,
    a panel per model family.

    ``curves``: records of :func:`advdefense.evaluation.l0_curves.l0_curves`; the accuracy at
    budget k counts an image as fooled only if the attack changed at most k pixels.
    """
    mine = [c for c in curves if c["attack"] == attack and c["n"]]
    if not mine:
        return None
    ks = np.arange(0, k_max + 1)
    several = len({c["threat"] for c in mine}) > 1  # line styles tell threats apart only then
    lines = {(c["model"], c["threat"]): [(int(k), accuracy_at(c, int(k))) for k in ks]
             for c in mine}
    n_of = {(c["model"], c["threat"]): c["n"] for c in mine}
    return _line_plot(lines, [c["n"] for c in mine], kinds,
                      lambda t: STYLES.get(t, "-") if several else "-",
                      lambda m, t: f"{m} ({t}, n={n_of[(m, t)]})",
                      f"{attack}: accuracy when only successes within k pixels count",
                      "pixel budget k (changed pixels, of 784)", path, step=True)


def plot_confusions(rows: list[dict[str, Any]], path: Path, threat: str = "all",
                    cols: int = 3) -> Path | None:
    """Confusion matrices per model: clean, and the worst case over ``threat``.

    A grid of ``cols`` models per row, each with its two 2x2 matrices side by side, so that
    twelve models fit a report page (about 900 x 750 pixels) with readable numbers.
    """
    models = sorted({r["model"] for r in rows})
    pick = {(r["model"], r["attack"], r["threat"]): r for r in rows}
    if not models:
        return None
    ncols = min(cols, len(models))
    nrows = -(-len(models) // ncols)
    fig, axes = plt.subplots(nrows, 2 * ncols, figsize=(3.4 * ncols, 2.1 * nrows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for j, m in enumerate(models):
        clean = next((r for (mm, a, _), r in pick.items() if mm == m and a == "none"), None)
        worst = pick.get((m, "worst_case", threat)) or next(
            (r for (mm, a, _), r in pick.items() if mm == m and a == "worst_case"), None)
        for i, (r, label) in enumerate(((clean, "clean"), (worst, "worst"))):
            ax = axes[j // ncols, 2 * (j % ncols) + i]
            if r is None:
                continue
            _confusion(ax, np.asarray(r["confusion"]),
                       f"{m}\n{label} ({r['threat']}), n={r['n']}")
    fig.suptitle("Confusion matrices, clean and worst case: rows = true digit (6, 7), columns = "
                 "predicted digit (6, 7); n = test images per matrix", fontsize=9)
    return _save(fig, path)


def _confusion(ax: Any, cm: np.ndarray, title: str) -> None:
    ax.axis("on")
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.sum()))
    for (a, b), v in np.ndenumerate(cm):
        ax.text(b, a, str(v), ha="center", va="center", fontsize=9,
                color="white" if v > 0.6 * max(1, cm.sum()) else "black")
    ax.set_xticks([0, 1], DIGITS, fontsize=7)
    ax.set_yticks([0, 1], DIGITS, fontsize=7)
    ax.tick_params(length=0, pad=1)
    ax.set_title(title, fontsize=7)


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
