"""The typed evaluation core: one :class:`Cell` per model x attack row x threat, and the
:class:`ResultSet` of a run. Their JSON form (the cell cache's records) lives here only.

A cell holds, for the images it covers, everything later stages need without realigning
anything: the true ``labels``, the model's predictions ``pred`` on the attacked images, their
confidence ``conf`` (max logit), the pixels the attack changed ``l0``, and ``index``: the
positions of those images among the evaluated ones (None = all of them, in order). A budgeted
attack (``eval.attack_n``) covers a nested subset; :meth:`Cell.restrict` cuts a cell down to
the images another cell shares, with every per-image list kept aligned.

What a row *measures* is its attack's declared threat model (``threat_model``, see
:mod:`advdefense.attacks.threat`) and ``method`` (the attack's family, ``attack.name``:
``fgsm``, ``pgd``, ``cascade``, ``jsma``, ``spatial``...; ``none`` for the clean row and the
worst-case name for worst-case rows). Checks, worst cases and the report dispatch on these two,
never on the row name ``attack``, which is only the config's label.

The cache record (JSON, :meth:`Cell.to_record`)::

    {"model", "attack", "threat", "n", "key", "pred": [n ints], "conf": [n floats],
     "seconds", "info": {...}, "examples": {"index": [k], "adv": [k x 784]},
     "index": [n ints] (budgeted cells only), "l0": [n ints] (attack rows only)}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from advdefense.attacks.threat import ThreatModel, threat_model_of

CLEAN = "none"


def method_of(attack: object | None) -> str:
    """The attack's family name (``attack.name``, else its class name); ``none`` for None."""
    if attack is None:
        return CLEAN
    return str(getattr(attack, "name", None) or type(attack).__name__.lower())


@dataclass
class Cell:
    """One model x attack row x threat on the images it covers (all lists of length ``n``).

    Attributes:
        model, attack, threat: registry name, the config's row name, the grid threat
            (``transfer`` / ``whitebox`` / ``blackbox``, or ``all`` for a worst case).
        labels: true labels in {0, 1} of the covered images.
        pred: predictions in {0, 1} on the attacked images; conf: their max logit.
        index: positions of the covered images among the evaluated ones; None = all, in order.
        l0: pixels the attack changed per image (None for the clean row and worst cases).
        method: the attack's family (see the module docstring); threat_model: its declared
            threat model (None: the clean row, worst cases, an undeclared attack).
        seconds, info, examples, key: wall time, attack extras, plotted adversarial images and
            the cache key (empty for derived cells).
        target: for a cell completed by a cascade (:mod:`advdefense.evaluation.cascade_worst`,
            derived, never cached): the positions it answers for; it covers those of them no
            earlier attack broke. None for every other cell.
    """

    model: str
    attack: str
    threat: str
    labels: list[int]
    pred: list[int]
    conf: list[float]
    index: list[int] | None = None
    l0: list[int] | None = None
    method: str = CLEAN
    threat_model: ThreatModel | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=lambda: {"index": [], "adv": []})
    key: str = ""
    target: list[int] | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        lists = {"pred": self.pred, "conf": self.conf, "index": self.index, "l0": self.l0}
        bad = {k: len(v) for k, v in lists.items() if v is not None and len(v) != n}
        if bad:
            raise ValueError(f"cell {self.model}/{self.attack}/{self.threat}: {n} labels but "
                             f"per-image lists of lengths {bad}")

    @property
    def n(self) -> int:
        """Images the cell covers."""
        return len(self.labels)

    @property
    def positions(self) -> list[int]:
        """Positions of the covered images among the evaluated ones."""
        return list(range(self.n)) if self.index is None else list(self.index)

    @property
    def correct(self) -> torch.Tensor:
        """(n,) bool: the prediction on the attacked image is the label."""
        return torch.tensor(self.pred, dtype=torch.long) == torch.tensor(self.labels,
                                                                           dtype=torch.long)

    @property
    def accuracy(self) -> float:
        """Share of covered images still classified correctly (NaN when n = 0)."""
        return float(self.correct.double().mean()) if self.n else float("nan")

    @property
    def name(self) -> tuple[str, str, str]:
        """``(model, attack, threat)``: the cell's place in the grid."""
        return self.model, self.attack, self.threat

    def restrict(self, positions: Sequence[int]) -> Cell:
        """This cell on ``positions`` (evaluated-image positions it covers) only."""
        where = {p: i for i, p in enumerate(self.positions)}
        try:
            pos = [where[p] for p in positions]
        except KeyError as exc:
            raise ValueError(f"cell {self.name} does not cover position {exc.args[0]}") from exc

        def cut(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in pos]

        return replace(self, labels=cut(self.labels), pred=cut(self.pred), conf=cut(self.conf),
                       l0=cut(self.l0), index=list(positions))

    def to_record(self) -> dict[str, Any]:
        """The JSON-able cache record (see the module docstring); labels are not stored."""
        extra: dict[str, Any] = {} if self.index is None else {"index": list(self.index)}
        if self.l0 is not None:
            extra["l0"] = list(self.l0)
        return extra | {"model": self.model, "attack": self.attack, "threat": self.threat,
                        "n": self.n, "key": self.key, "pred": list(self.pred),
                        "conf": list(self.conf), "seconds": self.seconds, "info": self.info,
                        "examples": self.examples}

    @classmethod
    def from_record(cls, record: dict[str, Any], labels: torch.Tensor | Sequence[int],
                    method: str = CLEAN, threat_model: ThreatModel | None = None) -> Cell:
        """A cell from its cache record; ``labels``: (N,) labels of *all* evaluated images."""
        all_labels = labels.cpu().tolist() if isinstance(labels, torch.Tensor) else list(labels)
        index = record.get("index")
        mine = all_labels if index is None else [all_labels[i] for i in index]
        return cls(record["model"], record["attack"], record["threat"], mine,
                   [int(v) for v in record["pred"]], [float(v) for v in record["conf"]],
                   None if index is None else [int(i) for i in index],
                   None if record.get("l0") is None else [int(v) for v in record["l0"]],
                   method, threat_model, float(record.get("seconds", 0.0)),
                   dict(record.get("info") or {}),
                   dict(record.get("examples") or {"index": [], "adv": []}),
                   str(record.get("key", "")))


def spec_identity(spec: Any) -> tuple[str, ThreatModel | None]:
    """``(method, threat model)`` of an :class:`~advdefense.evaluation.threats.AttackSpec`."""
    return method_of(spec.attack), threat_model_of(spec.attack)


def shared(cells: Sequence[Cell]) -> list[int] | None:
    """Sorted positions every cell covers (None: all cover every evaluated image)."""
    subsets = [set(c.index) for c in cells if c.index is not None]
    if not subsets:
        return None
    return sorted(set.intersection(*subsets))


def aligned(cells: Sequence[Cell]) -> list[Cell]:
    """``cells`` restricted to the images all of them cover (as they are when none is a subset)."""
    index = shared(cells)
    return list(cells) if index is None else [c.restrict(index) for c in cells]


@dataclass
class ResultSet:
    """The cells of one run, looked up by ``(model, attack, threat)``; iteration keeps order."""

    cells: list[Cell] = field(default_factory=list)

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)

    def get(self, model: str, attack: str, threat: str) -> Cell | None:
        """The cell at ``(model, attack, threat)``, or None."""
        return self._index().get((model, attack, threat))

    def where(self, **fields: Any) -> list[Cell]:
        """The cells whose attributes equal ``fields`` (e.g. ``model="m", threat="whitebox"``)."""
        return [c for c in self.cells if all(getattr(c, k) == v for k, v in fields.items())]

    def extend(self, cells: Iterable[Cell]) -> None:
        self.cells.extend(cells)

    def _index(self) -> dict[tuple[str, str, str], Cell]:
        return {c.name: c for c in self.cells}
