"""Masking checks with power: white-box attacks through gradient surrogates (issue 14 G).

Two parts of the defended models have a gradient that can mislead a white-box attack while
the forward pass is exact:

* **Feature squeezing** (median filter, then binarization). The rounding has no gradient, so
  the white-box threat model back-propagates straight through it; and the median's exact
  gradient reaches only the one pixel that is the median of each window, so a pixel that is
  no window's median gets none and the others only their windows' share. A *squeeze surrogate* (:class:`SqueezeSurrogate`) back-propagates the median as the
  window mean and the rounding as a sigmoid of a given temperature
  (:func:`advdefense.preprocess.squeeze_gradient`; forward values unchanged).
* **The majority vote**. Its gradient is that of the soft vote, which vanishes where members
  are confident (saturated softmax): what is left is the 1e-3 mean-logit tie-break.
  :class:`advdefense.ensembles.MemberMargins` gives the vote's exact output with the gradient
  of the median member's margin.

:class:`GradientVariants` wraps a gradient attack: every grid row whose threat model has gradient
access (FGSM, PGD, APGD and the ``autoattack`` cascade, JSMA, sparse PGD), chosen by that
threat model, never by the row's name or the attack's class. On a model that contains a
feature squeeze (found by type) it also runs the attack through each squeeze surrogate; on a
:class:`~advdefense.ensembles.MajorityVote` also through its members' margins, with and without
the squeeze surrogates. Every variant runs on every image with the same settings and seed
(early stop keeps the cost low on images an earlier variant already fools). Per example the
result keeps the image of the variant that did best *on the model itself*: a fooling image
where any variant fooled (the one with the largest wrong-class margin, the most confident
wrong answer), else the one with the smallest correct-class margin. The row is the
per-example worst over the variants; its record's ``info`` names them and gives each one's
accuracy alone and the images it won (:func:`variant_summary`).

:func:`masking_checks` then flags, per record, where a variant beat its straight-through /
own-output counterpart by more than the tolerance:

* ``squeeze_surrogate_beats_straight_through``: the squeeze surrogate left lower accuracy
  than straight-through (the same attack, the same images).
* ``members_beat_vote_output``: the attack through the members' margins left lower accuracy
  than through the vote's own output; gradient attacks on the vote's output are then weak.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advdefense.attacks.base import AttackResult, improves
from advdefense.checks import ConfigError, check_choice
from advdefense.ensembles import MajorityVote, MemberMargins
from advdefense.evaluation.cells import Cell
from advdefense.preprocess import (
    MEDIAN_GRADIENTS,
    check_temperature,
    squeeze_gradient,
    squeeze_modules,
)

Check = dict[str, Any]
OWN, MEMBERS = "own", "members"
SQUEEZE_CHECK = "squeeze_surrogate_beats_straight_through"
VOTE_CHECK = "members_beat_vote_output"


@dataclass(frozen=True)
class SqueezeSurrogate:
    """A backward pass for feature squeezing (the forward value is always exact).

    Attributes:
        median: ``mean`` (the median back-propagates as the window mean) or ``exact``.
        temperature: > 0, the rounding back-propagates as a sigmoid of this temperature (in
            quantization steps; for 1 bit, pixel units); None = straight-through.
    """

    median: str = "mean"
    temperature: float | None = 0.3

    def __post_init__(self) -> None:
        check_choice("squeeze_surrogates.median", self.median, MEDIAN_GRADIENTS)
        object.__setattr__(self, "temperature",
                           check_temperature("squeeze_surrogates.temperature", self.temperature))
        if self.median == "exact" and self.temperature is None:
            raise ConfigError("squeeze_surrogates", self.as_dict(),
                              "a surrogate: median=mean and/or a temperature (this one is "
                              "plain straight-through, which always runs)")

    @property
    def label(self) -> str:
        rounding = "straight_through" if self.temperature is None else f"sigmoid_t{self.temperature:g}"
        return f"median_{self.median}+{rounding}"

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "temperature": self.temperature}


# Measured (the module's tests and report): the median's gradient is what misleads PGD on
# the binarizing squeeze; the rounding's sigmoid alone changed nothing on 200 test digits.
DEFAULT_SQUEEZE_SURROGATES = (SqueezeSurrogate("mean", 0.3),)


@dataclass(frozen=True)
class Variant:
    """One way of taking the gradient: through the model's own output or (a vote) its
    members' margins; the squeeze straight-through (``squeeze=None``) or through a surrogate."""

    target: str = OWN
    squeeze: SqueezeSurrogate | None = None

    @property
    def name(self) -> str:
        return f"{self.target}/{'straight_through' if self.squeeze is None else self.squeeze.label}"


def _inner(model: nn.Module) -> nn.Module:
    from advdefense.registry import CheckedModel

    return model.model if isinstance(model, CheckedModel) else model


def gradient_variants(model: nn.Module,
                      squeeze_surrogates: Sequence[SqueezeSurrogate] = DEFAULT_SQUEEZE_SURROGATES,
                      vote_members: bool = True) -> list[Variant]:
    """The variants an attack on ``model`` runs, straight-through own output first.

    Squeeze surrogates where ``model`` contains a feature squeeze; the members' margins where
    it is a :class:`MajorityVote` (both by type, never by name).
    """
    inner = _inner(model)
    targets = [OWN] + ([MEMBERS] if vote_members and isinstance(inner, MajorityVote) else [])
    squeezes: list[SqueezeSurrogate | None] = [None]
    if squeeze_modules(inner):
        squeezes += list(squeeze_surrogates)
    return [Variant(t, s) for s in squeezes for t in targets]


class GradientVariants:
    """A gradient attack run through every gradient variant a model calls for; per example
    the strongest (see the module docstring). Same call convention as every attack.

    Args:
        attack: the wrapped attack, ``attack.run(model, images, labels) -> AttackResult``.
        squeeze_surrogates: the squeeze backward passes tried besides straight-through.
        vote_members: on a majority vote, also attack through the members' margins.
    """

    def __init__(self, attack: Any,
                 squeeze_surrogates: Sequence[SqueezeSurrogate] = DEFAULT_SQUEEZE_SURROGATES,
                 vote_members: bool = True) -> None:
        self.attack = attack
        self.squeeze_surrogates = tuple(squeeze_surrogates)
        self.vote_members = bool(vote_members)
        self.name = getattr(attack, "name", type(attack).__name__)

    def config(self) -> dict[str, Any]:
        """What the wrapper adds to the wrapped attack's config (part of the cache key)."""
        return {"squeeze_surrogates": [s.as_dict() for s in self.squeeze_surrogates],
                "vote_members": self.vote_members, "selection": "max_margin_on_model"}

    @property
    def threat_model(self) -> Any:
        """The wrapped attack's threat model: the variants change the gradient, not the set."""
        return getattr(self.attack, "threat_model", None)

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.run(model, images, labels).images

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
            need_success: bool = True) -> AttackResult:
        """Attack ``images`` (N, 1, 28, 28) in [0, 1], labels (N,) in {0, 1}; see the class.

        With one variant (a model with neither squeeze nor vote) this is the wrapped attack's
        own result. Otherwise ``result.info`` holds ``variant`` ((N,) index of the kept
        variant) and ``variants`` (a list of dicts: name, target, squeeze, accuracy alone,
        images won), see :func:`variant_summary`.
        """
        variants = gradient_variants(model, self.squeeze_surrogates, self.vote_members)
        if len(variants) == 1:  # the keyword only where it saves work: any run() accepts 3 args
            if need_success:
                return self.attack.run(model, images, labels)
            return self.attack.run(model, images, labels, need_success=False)
        n = len(labels)
        best = images.detach().clone()
        best_success = torch.zeros(n, dtype=torch.bool, device=images.device)
        best_score = torch.full((n,), float("-inf"), device=images.device)
        kept = torch.zeros(n, dtype=torch.int64, device=images.device)
        queries = torch.zeros(n, dtype=torch.int64, device=images.device)
        fooled_alone = []
        for i, variant in enumerate(variants):
            result = self._run_variant(model, variant, images, labels)
            with torch.no_grad():
                logits = model(result.images)
            success = logits.argmax(1) != labels
            true = logits.gather(1, labels[:, None]).squeeze(1)
            score = logits.masked_fill(
                nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1) - true
            better = improves(success, score, best_success, best_score)
            best[better], kept[better] = result.images[better], i
            best_success |= success
            best_score = torch.where(better, score, best_score)
            queries += result.queries.to(queries.device) + 1
            fooled_alone.append(success)
        info = {"variant": kept, "variants": variant_summary(variants, fooled_alone, kept,
                                                             best_success)}
        return AttackResult(best, best_success, queries, info)

    def _run_variant(self, model: nn.Module, variant: Variant, images: torch.Tensor,
                     labels: torch.Tensor) -> AttackResult:
        target = model if variant.target == OWN else MemberMargins(_inner(model))
        ctx = (contextlib.nullcontext() if variant.squeeze is None else
               squeeze_gradient(model, variant.squeeze.temperature, variant.squeeze.median))
        with ctx:
            return self.attack.run(target, images, labels)


class RescalableVariants(GradientVariants):
    """:class:`GradientVariants` around a rescalable attack (APGD, the ``autoattack``
    cascade): it keeps ``scaled``, so the convergence runs double the iterations or the
    restarts of every variant."""

    def scaled(self, steps: int = 1, restarts: int = 1, seed: int = 0) -> RescalableVariants:
        """The same variants around ``attack.scaled(steps, restarts, seed)``."""
        return RescalableVariants(self.attack.scaled(steps, restarts, seed),
                                  self.squeeze_surrogates, self.vote_members)


def wrap_variants(attack: Any,
                  squeeze_surrogates: Sequence[SqueezeSurrogate] = DEFAULT_SQUEEZE_SURROGATES,
                  vote_members: bool = True) -> GradientVariants:
    """``attack`` in :class:`GradientVariants` (:class:`RescalableVariants` where it has
    ``scaled``)."""
    cls = RescalableVariants if callable(getattr(attack, "scaled", None)) else GradientVariants
    return cls(attack, squeeze_surrogates, vote_members)


def variant_summary(variants: Sequence[Variant], fooled: Sequence[torch.Tensor],
                    kept: torch.Tensor, any_fooled: torch.Tensor) -> list[dict[str, Any]]:
    """Plain JSON per variant: ``name``, ``target``, ``squeeze`` (None = straight-through),
    ``accuracy`` (alone, on these images), ``won`` (fooled images whose kept image is its)."""
    n = max(len(kept), 1)
    return [{"name": v.name, "target": v.target,
             "squeeze": None if v.squeeze is None else v.squeeze.as_dict(),
             "accuracy": round(1.0 - float(f.double().sum()) / n, 6),
             "won": int((any_fooled & (kept == i)).sum())}
            for i, (v, f) in enumerate(zip(variants, fooled, strict=True))]


def with_gradient_variants(specs: Sequence[Any],
                           squeeze_surrogates: Sequence[SqueezeSurrogate] = DEFAULT_SQUEEZE_SURROGATES,
                           vote_members: bool = True) -> list[Any]:
    """The grid's attack specs with every gradient attack (a threat model with
    :class:`~advdefense.attacks.threat.Gradient` access) wrapped in :class:`GradientVariants`;
    its config records the wrapper (cache key). Query-only and grid attacks stay as they are."""
    from advdefense.attacks.threat import Gradient, threat_model_of
    from advdefense.evaluation.threats import AttackSpec

    if not squeeze_surrogates and not vote_members:
        return list(specs)
    out = []
    for spec in specs:
        tm = threat_model_of(spec.attack)
        if tm is not None and isinstance(tm.access, Gradient) \
                and not isinstance(spec.attack, GradientVariants):
            wrapped = wrap_variants(spec.attack, squeeze_surrogates, vote_members)
            spec = AttackSpec(spec.name, wrapped, spec.config | {"gradient_variants": wrapped.config()},
                              spec.threats)
        out.append(spec)
    return out


def _check(name: str, cell: Cell, passed: bool, detail: str) -> Check:
    return {"check": name, "model": cell.model, "threat": cell.threat,
            "attack": cell.attack, "passed": bool(passed), "detail": detail}


def masking_checks(cells: Sequence[Cell], tol: float = 0.01) -> list[Check]:
    """``squeeze_surrogate_beats_straight_through`` and ``members_beat_vote_output`` on every
    cell whose info lists gradient variants (see the module docstring). Each compares two
    variants of one cell: the same attack on the same images."""
    out = []
    for r in cells:
        variants = r.info.get("variants")
        if not isinstance(variants, list) or not variants:
            continue
        where = f" ({r.attack}, n={r.n})"
        for target in (OWN, MEMBERS):
            mine = [v for v in variants if v["target"] == target]
            plain = [v for v in mine if v["squeeze"] is None]
            surrogates = [v for v in mine if v["squeeze"] is not None]
            if plain and surrogates:
                st, low = plain[0], min(surrogates, key=lambda v: v["accuracy"])
                out.append(_check(
                    SQUEEZE_CHECK, r, low["accuracy"] >= st["accuracy"] - tol,
                    f"{target}: squeeze surrogate {low['name']} {low['accuracy']:.4f} vs "
                    f"straight-through {st['accuracy']:.4f}{where}"))
        own = [v for v in variants if v["target"] == OWN and v["squeeze"] is None]
        members = [v for v in variants if v["target"] == MEMBERS and v["squeeze"] is None]
        if own and members:
            a, b = own[0]["accuracy"], members[0]["accuracy"]
            won = {v["name"]: v["won"] for v in variants}
            out.append(_check(
                VOTE_CHECK, r, b >= a - tol,
                f"members' margins {b:.4f} vs the vote's own output {a:.4f}; images won "
                f"{won}{where}"))
    return out


def strongest(variants: Sequence[dict[str, Any]]) -> str:
    """The name of the variant with the lowest accuracy alone (first on ties)."""
    return min(variants, key=lambda v: v["accuracy"])["name"]
