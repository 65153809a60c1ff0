"""What an attack is allowed to do: its threat model = a perturbation set + an access model.

Every attack declares one (``attack.threat_model``), so the evaluation can group rows by what
they measure (the worst-case variants, the L0 checks) without reading row names: a row named
``foo`` running ``SparsePGD(k=20)`` is an L0 row at k = 20 whatever it is called.

Perturbation sets (all on images in [0, 1], pixel-intensity units):

* :class:`Linf` ``(eps)``: every pixel moves by at most ``eps``.
* :class:`L0` ``(k, direction)``: at most ``k`` of the 784 pixels change, each to any value in
  [0, 1] (``direction="increase"``: only brighter, ``"decrease"``: only darker). ``k = 784`` is
  no pixel limit (the unbounded local search).
* :class:`Spatial` ``(max_angle, max_shift, shrink)``: a rotation by at most ``max_angle``
  degrees and a translation by at most ``max_shift`` pixels in x and in y (after the border
  ``shrink`` puts around the digit: ``"kit"`` 24x24, ``"20x20"``); ``preset`` names the
  matching preset, if any.

Access models:

* :class:`Gradient`: the attack back-propagates through the whole model (white-box).
* :class:`Queries` ``(budget)``: forward passes only, at most ``budget`` per image.

Which grid threat (transfer / white-box / black-box) a row runs under is a separate question
(:mod:`advdefense.evaluation.threats`): a gradient attack crafted on a surrogate is a transfer row.
"""

from __future__ import annotations

from dataclasses import dataclass

PIXELS = 28 * 28
DIRECTIONS = ("both", "increase", "decrease")


@dataclass(frozen=True)
class Linf:
    """L-infinity ball of radius ``eps`` in [0, 1] around the image."""

    eps: float


@dataclass(frozen=True)
class L0:
    """At most ``k`` changed pixels (1 <= k <= 784), each only in ``direction``."""

    k: int
    direction: str = "both"

    def __post_init__(self) -> None:
        if not 1 <= self.k <= PIXELS or self.direction not in DIRECTIONS:
            raise ValueError(f"L0(k={self.k}, direction={self.direction!r}): k must be in "
                             f"[1, {PIXELS}] and direction one of {DIRECTIONS}")

    @property
    def unbounded(self) -> bool:
        """True when every pixel may change (no pixel limit)."""
        return self.k >= PIXELS

    def contains(self, other: L0) -> bool:
        """Whether every perturbation of ``other`` is one of this set's."""
        return other.k <= self.k and self.direction in ("both", other.direction)


@dataclass(frozen=True)
class Spatial:
    """Rotations up to ``max_angle`` degrees, shifts up to ``max_shift`` pixels in x and y."""

    max_angle: float
    max_shift: float
    shrink: str = "none"   # the digit's border first: "none", "kit" (24x24), "20x20"
    preset: str | None = None


@dataclass(frozen=True)
class Gradient:
    """White-box access: input gradients of the whole model."""


@dataclass(frozen=True)
class Queries:
    """Query-only access: at most ``budget`` forward passes per image, no gradients."""

    budget: int


Perturbation = Linf | L0 | Spatial
Access = Gradient | Queries


@dataclass(frozen=True)
class ThreatModel:
    """A perturbation set and the access the attack uses to search it."""

    perturbation: Perturbation
    access: Access

    @property
    def l0(self) -> L0 | None:
        """The L0 set, or None for a dense (L-infinity or spatial) threat model."""
        return self.perturbation if isinstance(self.perturbation, L0) else None

    @property
    def query_only(self) -> bool:
        return isinstance(self.access, Queries)

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able form: ``{"set": "l0", "k": 20, ..., "access": "queries", ...}``."""
        p, a = self.perturbation, self.access
        out: dict[str, object] = {"set": type(p).__name__.lower()} | vars(p)
        return out | {"access": type(a).__name__.lower()} | vars(a)


def threat_model_of(attack: object) -> ThreatModel | None:
    """``attack.threat_model``, or None for an object that declares none (e.g. the clean row)."""
    return getattr(attack, "threat_model", None)
