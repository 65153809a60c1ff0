"""Threat models: who crafts the adversarial images, and with what access.

* ``transfer``: images are crafted once per attack on a *surrogate* (the undefended,
  unpreprocessed CNN) and fed to every evaluated model. This is what the paper measured.
* ``whitebox``: the attack gets the whole evaluated model end to end (preprocessing, every
  member, the stacker head). Rounding steps (bit-depth reduction) use straight-through
  gradients (BPDA), so a white-box number is never inflated by a zero gradient. Every white-box
  gradient attack (FGSM, PGD, the autoattack cascade, JSMA, sparse PGD) also runs through
  gradient surrogates where straight-through can mislead (the feature
  squeeze's median, the majority vote's saturated soft vote) and keeps the per-example worst
  (:mod:`advdefense.evaluation.masking`).
* ``blackbox``: query-only attacks (local search) against the whole model.

The ``none`` attack (clean images) belongs to every threat model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advdefense.models import CheckedModel

THREATS = ("transfer", "whitebox", "blackbox")
CLEAN = "none"


@dataclass
class EvalModel:
    """A model under evaluation.

    Attributes:
        name: registry name (``none-fgsm``, ``stacker``...).
        module: (N, 1, 28, 28) in [0, 1] -> (N, 2) logits, eval mode.
        digest: SHA-256 of its registry file (or any string identifying the weights).
    """

    name: str
    module: nn.Module
    digest: str


@dataclass
class AttackSpec:
    """One configured attack of the grid.

    Attributes:
        name: row label (``fgsm``, ``pgd``, ``spatial_engstrom``...).
        attack: ``attack(model, images, labels) -> images`` (an ``advdefense.attacks``
            object); ``None`` for the clean row.
        config: plain dict of everything that determines the attack (part of the cache key).
        threats: the threat models this attack runs under.
    """

    name: str
    attack: Callable[..., Any] | None
    config: dict[str, Any] = field(default_factory=dict)
    threats: tuple[str, ...] = THREATS


def attackable(model: nn.Module, fast: bool = True) -> nn.Module:
    """A copy of ``model`` for gradient attacks: same forward values, straight-through rounding.

    Unwraps a :class:`~advdefense.models.CheckedModel` (inputs are checked once by the grid,
    not per query; every attack keeps its images in [0, 1]), converts the weights to
    channels-last, and switches every module with a ``straight_through`` flag (feature
    squeezing) to the identity backward pass. With ``fast`` (the default) the member pipelines
    are made :class:`advdefense.fastpath.FastMember` modules (:func:`advdefense.fastpath.optimize`:
    same logits and input gradients up to float rounding, about 1.45x faster on one CPU thread;
    ``benchmarks/bench_forward.py``). The original model is untouched and is the one that
    predicts.
    """
    from advdefense.fastpath import optimize

    inner = model.model if isinstance(model, CheckedModel) else model
    inner = optimize(inner) if fast else copy.deepcopy(inner).eval()
    for m in inner.modules():
        if hasattr(m, "straight_through"):
            m.straight_through = True
    # channels-last convolutions are 1.2-1.7x faster on CPU for these small CNNs (same
    # values up to float rounding); attacks call the model thousands of times per image
    return inner.to(memory_format=torch.channels_last)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, 2) of ``model`` on images (N, 1, 28, 28) in [0, 1], in chunks, no grad."""
    out = [model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 2)


def craft(spec: AttackSpec, target: nn.Module, images: torch.Tensor,
          labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run ``spec.attack`` against ``target``; returns adversarial images and summary info.

    The summary has ``queries_mean`` when the attack reports queries, the per-example
    extras of ``AttackResult.info`` (e.g. spatial ``angle``, ``dx``, ``dy``) as lists, and its
    plain JSON entries as they are (``evaluation.masking``'s ``variants``).
    """
    if spec.attack is None:
        return images, {}
    run = getattr(spec.attack, "run", None)
    if run is None:
        adv = spec.attack(target, images, labels)
        return adv.detach().clamp(0, 1), {}
    result = run(target, images, labels)
    info: dict[str, Any] = {}
    if result.queries is not None and result.queries.numel():
        info["queries_mean"] = float(result.queries.double().mean())
    for key, value in (result.info or {}).items():
        if isinstance(value, torch.Tensor) and value.ndim == 1:
            info[key] = [round(float(v), 4) for v in value]
        elif isinstance(value, str | int | float | list | dict):  # plain JSON, e.g. the
            info[key] = value                                     # gradient variants' summary
    return result.images.detach().clamp(0, 1), info
