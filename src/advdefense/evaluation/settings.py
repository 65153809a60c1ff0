"""The evaluation's rules, as plain settings: attack budgets, sweep / sanity / certification
parameters and the device, each value checked (a clear :class:`~advdefense.checks.ConfigError`).

Nothing here knows Hydra: the parsers take mappings (an OmegaConf ``DictConfig`` is one) and,
where an attack must be built from a config node, a ``build(node, where, **overrides)`` callable.
:class:`EvalSettings` gathers everything :func:`advdefense.evaluation.pipeline.evaluate_models`
needs besides the models, attacks and images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advdefense.checks import ConfigError
from advdefense.evaluation.budget import FullN
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.cells import method_of
from advdefense.evaluation.certified import CertifyConfig
from advdefense.evaluation.masking import DEFAULT_SQUEEZE_SURROGATES, SqueezeSurrogate
from advdefense.evaluation.threats import THREATS, EvalModel


@dataclass
class SweepConfig:
    """What the sweeps run on (see :mod:`advdefense.evaluation.sweeps`).

    ``factories`` maps a sweep row name to (eps -> attack, base config); each attack's
    ``method`` (``fgsm``, ``pgd``) is what the checks and plots dispatch on.
    """

    n: int | float = 200      # images, or a fraction in (0, 1) of the evaluated images
    min_n: int = 0            # at least this many images when n is a fraction
    eps: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
    threats: Sequence[str] = ("whitebox", "transfer")
    factories: dict[str, tuple[Callable[[float], Any], dict[str, Any]]] = field(default_factory=dict)
    angles: Sequence[float] = tuple(range(-30, 31, 5))
    shifts: Sequence[float] = (-3, -2, -1, 0, 1, 2, 3)
    gradient_n: int = 64

    def images(self, n: int) -> int:
        """How many of ``n`` evaluated images the sweeps run on."""
        if isinstance(self.n, int):
            return self.n
        return max(self.min_n, math.ceil(self.n * n))


@dataclass
class SanityConfig:
    """Tolerances of the sanity checks, and the gradient variants of every white-box
    gradient attack (:mod:`advdefense.evaluation.masking`: squeeze surrogates on models with a
    feature squeeze, the members' margins on a majority vote; none and False = straight-through
    only)."""

    tol: float = 0.01
    eps1_max_acc: float = 0.05
    max_zero_grad: float = 0.05
    convergence_n: int = 0    # images per convergence run (0 = off); see evaluation.convergence
    squeeze_surrogates: Sequence[SqueezeSurrogate] = DEFAULT_SQUEEZE_SURROGATES
    vote_members: bool = True


@dataclass
class EvalSettings:
    """Everything one evaluation run needs besides the models, attacks and images.

    Attributes:
        out_dir: where the result files go.
        cache: the cell cache (shared by runs; a multirun over models fills one cache).
        threats: subset of ('transfer', 'whitebox', 'blackbox').
        surrogate: the transfer surrogate (required if 'transfer' in threats).
        sweep: sweep settings, or None to skip sweeps (and the checks that need them).
        sanity: sanity-check tolerances.
        attack_n: attack row -> most images it is crafted on against each model (see
            :func:`attack_budget`); absent = all.
        seed, progress: subset seed, progress bars.
        meta: extra entries for ``results.json``'s meta.
        full_n: models whose listed rows ignore ``attack_n``, their worst cases completed by a
            cascade (``eval.full_n``, :func:`full_n_settings`); None = none.
    """

    out_dir: str | Path
    cache: CellCache
    threats: Sequence[str] = THREATS
    surrogate: EvalModel | None = None
    sweep: SweepConfig | None = None
    sanity: SanityConfig = field(default_factory=SanityConfig)
    attack_n: dict[str, int | None] = field(default_factory=dict)
    seed: int = 0
    progress: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    full_n: FullN | None = None


def resolve_device(value: str | None) -> torch.device:
    """``eval.device``: ``auto`` (CUDA when there is one, else CPU), ``cpu``, ``cuda``, ``cuda:N``."""
    value = "auto" if value in (None, "") else str(value)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError as exc:
        raise ConfigError("eval.device", value, "auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (device.index or 0) >= count:
            raise ConfigError("eval.device", value,
                              f"a device that is there: this machine has {count} CUDA device(s); "
                              "use eval.device=cpu or auto")
    elif device.type != "cpu":
        raise ConfigError("eval.device", value, "auto, cpu, cuda or cuda:N")
    return device


def attack_budget(node: Mapping[str, Any], n: int, device: torch.device) -> dict[str, int]:
    """``eval.attack_n``: attack row -> most images it is crafted on per model (None = all).

    An integer >= 1 is a count; a number in (0, 1) a fraction of the ``n`` evaluated images
    (rounded up), so quick mode (``eval.n=200``) scales the budget down with n. On a CUDA
    ``device`` ``eval.attack_n_cuda`` replaces it (null: every row on all n).
    """
    key = "attack_n_cuda" if device.type == "cuda" else "attack_n"
    out = {}
    for name, k in (node.get(key) or {}).items():
        if k is None:
            continue
        if isinstance(k, float) and 0 < k < 1:
            k = max(1, math.ceil(k * n))
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"eval.{key}.{name}", k,
                              "a positive integer, a fraction in (0, 1) of eval.n, or null for all")
        out[str(name)] = int(k)
    return out


def full_n_settings(node: Mapping[str, Any], goals: Mapping[str, Any] | None,
                    rows: Mapping[str, Any]) -> FullN | None:
    """``eval.full_n`` for the goals of ``eval.experiment`` (None without goals, unless the node
    names models): see :func:`advdefense.evaluation.budget.full_n_rule`. ``rows``: configured
    row name -> the built attack (its method and threat model pick the goals' rows)."""
    from advdefense.attacks.threat import threat_model_of
    from advdefense.evaluation.budget import full_n_rule

    described = {}
    for name, attack in rows.items():
        tm = threat_model_of(attack)
        described[str(name)] = {"method": method_of(attack),
                                "threat_model": None if tm is None else tm.as_dict()}
    return full_n_rule(plain(node.get("full_n")), goals, described)


def convergence_n(value: Any) -> int:
    """``eval.sanity.convergence_n``: images per convergence run, an integer >= 0 (0 = off)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError("eval.sanity.convergence_n", value, "an integer >= 0 (0 = no check)")
    return int(value)


def sweep_n(value: Any, min_n: Any = 0) -> tuple[int | float, int]:
    """``eval.sweep.n``: an image count (int >= 1) or a fraction in (0, 1) of the evaluated n."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or (
            isinstance(value, float) and value >= 1):
        raise ConfigError("eval.sweep.n", value,
                          "a positive integer (images) or a fraction in (0, 1) of eval.n")
    if isinstance(min_n, bool) or not isinstance(min_n, int) or min_n < 0:
        raise ConfigError("eval.sweep.min_n", min_n, "an integer >= 0")
    return (value if isinstance(value, int) else float(value)), int(min_n)


def plain(value: Any) -> Any:
    """Mappings and sequences (OmegaConf containers included) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    return value


Build = Callable[..., Any]


def sweep_config(node: Mapping[str, Any] | None, attacks: Mapping[str, Any],
                 build: Build) -> SweepConfig | None:
    """``eval.sweep``: eps-sweep factories built from the grid's own attack nodes
    (``attacks``: row name -> config node) with eps overridden; None when disabled.

    An attack with a step size (PGD, found by its ``method``) gets the step
    ``max(eps * alpha_ratio, 1e-3)``.
    """
    if not node or not node.get("enabled", True):
        return None
    factories: dict[str, Any] = {}
    ratio = node.get("alpha_ratio")
    for name in node["attacks"]:
        spec = attacks.get(name)
        if spec is None or "_target_" not in spec:
            continue
        extra = dict(node.get("overrides", {}).get(name) or {})
        stepped = method_of(build(spec, f"eval.attacks.{name}")) == "pgd"

        def make(eps: float, spec: Any = spec, extra: dict = extra, name: str = name,
                 stepped: bool = stepped) -> Any:
            kw = dict(extra)
            if stepped and ratio:
                kw["alpha"] = max(eps * float(ratio), 1e-3)
            return build(spec, f"eval.attacks.{name}", eps=eps, **kw)

        factories[name] = (make, plain(spec) | {"sweep": extra, "alpha_ratio": ratio})
    n, min_n = sweep_n(node["n"], node.get("min_n", 0))
    return SweepConfig(n=n, min_n=min_n, eps=list(node["eps"]), threats=list(node["threats"]),
                       factories=factories, angles=list(node["angles"]),
                       shifts=list(node["shifts"]), gradient_n=int(node["gradient_n"]))


def sanity_config(node: Mapping[str, Any]) -> SanityConfig:
    """``eval.sanity``: tolerances and the gradient variants of white-box gradient attacks."""
    surrogates = []
    for i, s in enumerate(node.get("squeeze_surrogates") or []):
        key = f"eval.sanity.squeeze_surrogates[{i}]"
        if not isinstance(s, Mapping) or set(s) - {"median", "temperature"}:
            raise ConfigError(key, plain(s), "a mapping with keys median (mean or exact) and "
                              "temperature (> 0, or null for straight-through)")
        try:
            surrogates.append(SqueezeSurrogate(s.get("median", "mean"), s.get("temperature")))
        except ConfigError as exc:
            raise ConfigError(key, plain(s), f"{exc.key}={exc.value!r}: {exc.allowed}") from exc
    vote = node.get("vote_members", True)
    if not isinstance(vote, bool):
        raise ConfigError("eval.sanity.vote_members", vote, "true or false")
    return SanityConfig(float(node["tol"]), float(node["eps1_max_acc"]),
                        float(node["max_zero_grad"]),
                        convergence_n(node.get("convergence_n", 0)), tuple(surrogates), vote)


def certify_config(node: Mapping[str, Any] | None) -> CertifyConfig | None:
    """``eval.certify`` as plain settings (None when disabled), each value checked."""
    if not node or not node.get("enabled", True):
        return None
    for key in ("n0", "n", "batch_size"):
        v = node.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"eval.certify.{key}", v, "a positive integer")
    alpha = node.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ConfigError("eval.certify.alpha", alpha, "a number in (0, 1)")
    r = node.get("max_radius")
    if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < 784:
        raise ConfigError("eval.certify.max_radius", r, "an integer in [0, 783]")
    images = node.get("images")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int)
                               or images < 1):
        raise ConfigError("eval.certify.images", images,
                          "a positive integer (stratified subset), or null for every evaluated image")
    return CertifyConfig(int(node["n0"]), int(node["n"]), float(alpha), int(node["batch_size"]),
                         int(r), images)
