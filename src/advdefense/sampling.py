"""The one seeded, stratified, nested sampler of the package.

Every subset the package draws goes through :func:`stratified_sample`: the validation split
and the train/test subsets of the data module, the evaluated test images, the budgeted
attacks' nested order (``eval.attack_n``), the certification and convergence subsets.

How it works, for labels (N,) with classes c of sizes m_c: each class is shuffled (seeded);
the item of rank r in its class gets the key (r + 0.5) / m_c; the *order* sorts all items by
key. Every prefix of length k of the order is then stratified (class c contributes
round(k m_c / N) items, within one), and every smaller subset lies inside every larger one.
For two classes (6 vs 7, the only labels the package samples) the prefix's class counts are
exactly the largest-remainder allocation of k; with more classes they can differ from it by
one item per class (a largest-remainder allocation is not nested).

Two details are parameters because results depend on them (changing them would change which
images a figure is computed on, and invalidate cached evaluation cells):

* ``rng``: ``"numpy"`` shuffles with ``np.random.default_rng(seed)`` (seed may be a sequence
  of ints), ``"torch"`` with a ``torch.Generator`` seeded with ``seed`` (an int). The classes
  are shuffled one after the other in ascending order.
* ``ties``: two items of different classes can have equal keys; ``"class"`` puts the lower
  class first (for two classes: the largest-remainder rule, ties to class 0), ``"position"``
  the lower index first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

RNGS = ("numpy", "torch")
TIES = ("class", "position")

Indices = TypeVar("Indices", np.ndarray, torch.Tensor)


def stratified_sample(labels: Indices, n: int | None = None, seed: int | Sequence[int] = 0, *,
                      nested: bool = False, first: int = 0, rng: str = "numpy",
                      ties: str = "class") -> Indices:
    """Indices of a seeded stratified subset of ``n`` of the items (all of them if None).

    Args:
        labels: (N,) class labels (any integer values), numpy array or torch tensor.
        n: subset size, >= 0; None or more than N means all N items.
        seed: seeds the shuffle of each class (see ``rng``).
        nested: False: the subset's indices sorted ascending. True: the first ``n`` items of
            the nested order (see the module docstring), in that order; with ``n=None`` a
            permutation of ``range(N)`` whose every prefix is stratified.
        first: the positions ``0 .. first-1`` are put in front of the order (in index order),
            so every subset of at least ``first`` items contains them.
        rng: ``"numpy"`` or ``"torch"``: the generator that shuffles each class.
        ties: ``"class"`` or ``"position"``: which of two equal keys comes first.

    Returns:
        int64 indices into ``labels``, (min(n, N),), of the same kind as ``labels`` (a numpy
        array for a numpy array, a CPU tensor for a tensor).

    Raises:
        ValueError: a negative ``n``, or an unknown ``rng`` / ``ties``.
    """
    if rng not in RNGS or ties not in TIES:
        raise ValueError(f"rng must be one of {RNGS} and ties one of {TIES}, got {rng!r}, {ties!r}")
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    total = len(y)
    if n is not None and int(n) < 0:
        raise ValueError(f"cannot take {n} of {total} items")
    take = total if n is None else min(int(n), total)
    keys = np.empty(total, dtype=np.float64)
    rank = np.empty(total, dtype=np.int64)
    numpy_rng = np.random.default_rng(seed) if rng == "numpy" else None
    torch_rng = torch.Generator().manual_seed(int(seed)) if rng == "torch" else None  # type: ignore[arg-type]
    for r, c in enumerate(np.unique(y)):
        pos = np.flatnonzero(y == c)
        if numpy_rng is not None:
            perm = numpy_rng.permutation(pos)
        else:
            perm = pos[torch.randperm(len(pos), generator=torch_rng).numpy()]
        keys[perm] = (np.arange(len(pos), dtype=np.float64) + 0.5) / len(pos)
        rank[pos] = r
    keys[:min(first, total)] = -1.0
    position = np.arange(total)
    order = np.lexsort((position, keys) if ties == "position" else (position, rank, keys))
    out = order[:take].astype(np.int64)
    if not nested:
        out = np.sort(out)
    return torch.from_numpy(out) if isinstance(labels, torch.Tensor) else out
