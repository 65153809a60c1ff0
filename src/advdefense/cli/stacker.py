"""``model=stacker`` (and ``vote``, ``mean``...) -> a :class:`~advdefense.lit.StackedEnsemble`.

:func:`stacked_ensemble` is the ``_target_`` of those model configs: it loads the named members
from the registry (every missing one named at once, with one command that trains them all),
builds the MLP head from ``hidden`` / ``activation`` / ``skip``, and hands both, with the
registry specs that rebuild them, to the LightningModule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from advdefense.checks import ConfigError, check_choice
from advdefense.defenses import TrainingDefense
from advdefense.ensembles import COMBINERS
from advdefense.lit.ensemble import StackedEnsemble
from advdefense.nets import StackerMLP
from advdefense.registry import MissingModels, load_members


def _member_parts(name: str) -> tuple[str, str, str | None]:
    """``blur-fgsm`` -> (blur, fgsm, None); ``blur-fgsm-s3`` -> (blur, fgsm, "3")."""
    match = re.fullmatch(r"([^-]+)-(.+?)(?:-s(\d+))?", name)
    if match is None:
        return name, "", None
    return match.group(1), match.group(2), match.group(3)


def _seed_args(seed: str | None) -> str:
    return "" if seed is None else f" seed={seed} 'seed_suffix=-s${{seed}}'"


def train_command(name: str) -> str:
    """The command that trains member ``name`` (``<preprocess>-<defense>[-s<seed>]``)."""
    preprocess, defense, seed = _member_parts(name)
    return f"python train.py preprocess={preprocess} defense={defense}{_seed_args(seed)}"


def _group_options(group: str) -> set[str] | None:
    """The options of config group ``group`` (``conf/<group>/*.yaml`` in the run's file config
    sources), or None when no Hydra run config says where ``conf/`` is."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    dirs = [Path(src.path) / group for src in HydraConfig.get().runtime.config_sources
            if src.schema == "file"]
    if not dirs:
        return None
    return {p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")}


def _custom_names(names: list[str]) -> list[str]:
    """Names that are not ``<preprocess>-<defense>[-s<seed>]`` of existing config options."""
    preprocess, defense = _group_options("preprocess"), _group_options("defense")
    if preprocess is None or defense is None:
        return []
    return [n for n in names if _member_parts(n)[0] not in preprocess
            or _member_parts(n)[1] not in defense]


def train_all_command(names: list[str]) -> str:
    """One multirun command that trains every member in ``names``.

    Hydra sweeps a product: when ``names`` is exactly the product of their preprocessings and
    defenses it trains just them; otherwise the product with ``skip_if_registered=true``, which
    skips members already registered with the same config. A member with its own ``name=``
    (e.g. a wider net, ``none-pgd_spatial_uae_wide``) has no command that can be read off its
    name: the hint then says to train it with the overrides that made it.
    """
    custom = _custom_names(names)
    if custom:
        rest = [n for n in names if n not in custom]
        hint = (f"train {', '.join(custom)} with the command that made "
                f"{'it' if len(custom) == 1 else 'them'} (python train.py preprocess=... "
                "defense=... name=<the name> plus its own overrides)")
        return f"{train_all_command(rest)}; {hint}" if rest else hint
    if len(names) == 1:
        return train_command(names[0])
    parts = [_member_parts(n) for n in names]
    pre = list(dict.fromkeys(p for p, _, _ in parts))
    dfs = list(dict.fromkeys(d for _, d, _ in parts))
    seeds = list(dict.fromkeys(s for _, _, s in parts))
    seed = (f" seed={','.join(seeds)} 'seed_suffix=-s${{seed}}'" if None not in seeds
            else "" if seeds == [None] else None)
    if seed is None:  # a mix of seeded and unseeded names: one command per name
        return " && ".join(train_command(n) for n in names)
    exact = len(set(parts)) == len(pre) * len(dfs) * len(seeds)
    return (f"python train.py -m preprocess={','.join(pre)} defense={','.join(dfs)}{seed}"
            + ("" if exact else " skip_if_registered=true"))


def stacked_ensemble(members: Sequence[str], models_dir: str | Path, combine: str = "mlp",
                     hidden: Sequence[int] = (256, 256), activation: str = "relu",
                     skip: str = "none", defense: TrainingDefense | None = None,
                     defense_target: str = "ensemble",
                     optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                     scheduler: Callable[..., Any] | None = None) -> StackedEnsemble:
    """The ensemble of the registry members ``members`` (names) in ``models_dir``.

    ``combine='mlp'`` gets a fresh :class:`~advdefense.nets.StackerMLP` head over the 2 x M
    member logits (``hidden`` widths, ``activation``, ``skip``); ``vote`` and ``mean`` none.
    The other arguments go to :class:`~advdefense.lit.StackedEnsemble` as they are.

    Raises:
        ConfigError: for an empty member list or an unknown ``combine`` / ``defense_target``.
        MissingModels: naming every member not in the registry and one command training them.
    """
    check_choice("model.combine", combine, COMBINERS)
    check_choice("model.defense_target", defense_target, ["ensemble", "members"])
    names = [str(m) for m in members]
    if not names:
        raise ConfigError("model.members", names, "a non-empty list of registry member names")
    try:
        modules, specs = load_members(models_dir, names)
    except MissingModels as exc:
        raise MissingModels(f"{exc}: {train_all_command(exc.missing)}", exc.missing) from None
    head, head_spec = None, None
    if combine == "mlp":
        head_spec = {"_target_": "advdefense.nets.StackerMLP", "in_features": 2 * len(modules),
                     "hidden": [int(h) for h in hidden], "activation": activation, "skip": skip}
        head = StackerMLP(**{k: v for k, v in head_spec.items() if k != "_target_"})
    return StackedEnsemble(modules, head, combine, specs, head_spec, defense=defense,
                           defense_target=defense_target, optimizer=optimizer, scheduler=scheduler)
