"""The report's PNG plots (:mod:`advdefense.evaluation.plots`), optionally cached.

Rendering the plots is most of a fully cached rerun's time (matplotlib's ``savefig``: several
seconds per figure on a CPU). With a ``cache_dir`` each PNG is stored under a key of what it
shows (its data, timing fields left out), the plotting module's source and the matplotlib
version; a rerun whose data did not change copies the stored PNG instead of drawing it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advdefense.io import atomic_write_bytes
from advdefense.report.common import read_or

TIMING = ("seconds", "timings")


def _strip(value: Any) -> Any:
    """``value`` without timing entries (they change on every run, the figure does not)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list | tuple):
        return [_strip(v) for v in value]
    return value


@functools.cache
def _plot_version() -> str:
    import matplotlib

    from advdefense.evaluation import plots

    source = Path(plots.__file__).read_bytes() + Path(__file__).read_bytes()
    return hashlib.sha256(source).hexdigest()[:16] + ";mpl=" + matplotlib.__version__


def _digest(data: Any) -> str:
    """SHA-256 of ``data`` without its timing entries."""
    text = json.dumps(_strip(data), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _cached(cache_dir: Path | None, path: Path, digest: str,
            draw: Callable[[], Path | None]) -> Path | None:
    """``draw()`` into ``path``, or the stored PNG of the same data (``digest``) copied there."""
    if cache_dir is None:
        return draw()
    text = json.dumps([path.name, digest, _plot_version()])
    key = hashlib.sha256(text.encode()).hexdigest()[:32]
    stored, none = cache_dir / f"{key}.png", cache_dir / f"{key}.none"
    if stored.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stored, path)
        return path
    if none.is_file():  # this data draws no figure
        return None
    made = draw()
    if made is None:
        atomic_write_bytes(none, b"")
    else:
        atomic_write_bytes(stored, Path(made).read_bytes())
    return made


def make_plots(out_dir: Path, rows: list[dict[str, Any]], sweeps: dict[str, Any],
               examples: dict[str, Any], curves: list[dict[str, Any]] | None = None,
               kinds: dict[str, str] | None = None,
               cache_dir: str | Path | None = None) -> list[Path]:
    """All PNG plots into ``out_dir/plots``; returns the written paths.

    ``kinds`` (model name -> ``member`` / ``ensemble``) groups the line plots' panels by model
    family (see :func:`advdefense.evaluation.plots.family`). ``cache_dir``: where drawn PNGs
    are kept for reruns (None: always draw).
    """
    from advdefense.evaluation import plots

    cache = None if cache_dir is None else Path(cache_dir)
    pdir = out_dir / "plots"
    eps, spatial, curves = sweeps.get("eps", []), sweeps.get("spatial", []), curves or []

    digests: dict[int, str] = {}  # one digest per data source (the examples are large)

    def plot(name: str, data: Any, draw: Callable[[Path], Path | None]) -> None:
        if cache is not None and id(data) not in digests:
            digests[id(data)] = _digest([data, kinds])
        made.append(_cached(cache, pdir / name, digests.get(id(data), ""),
                            lambda: draw(pdir / name)))

    made: list[Path | None] = []
    for a in ("fgsm", "pgd"):  # by the sweep rows' method, whatever their names
        plot(f"eps_{a}.png", eps, lambda p, a=a: plots.plot_eps(eps, a, p, kinds))
    plot("rotation.png", spatial, lambda p: plots.plot_spatial(spatial, ("angle",), p, kinds))
    plot("shift.png", spatial, lambda p: plots.plot_spatial(spatial, ("dx", "dy"), p, kinds))
    cells = examples.get("cells", [])
    for attack in sorted({c["attack"] for c in cells}):
        plot(f"examples_{attack}.png", examples,
             lambda p, a=attack: plots.plot_examples(examples["originals"], cells, a, p,
                                                     labels=examples.get("labels")))
    for attack in sorted({c["attack"] for c in curves}):
        plot(f"l0_{attack}.png", curves,
             lambda p, a=attack: plots.plot_l0(curves, a, p, kinds=kinds))
    plot("confusion.png", rows, lambda p: plots.plot_confusions(rows, p))
    certified = read_or(out_dir / "certified.json", [])
    plot("certified_l0.png", certified, lambda p: plots.plot_certified(certified, p))
    return [p for p in made if p is not None]
