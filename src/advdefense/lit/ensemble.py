"""``StackedEnsemble``: the integrated model over frozen registry members (and vote baselines)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advdefense.checks import ConfigError, check_choice
from advdefense.defenses import TrainingDefense
from advdefense.ensembles import COMBINERS, MemberEnsemble, build_ensemble
from advdefense.lit.base import ClassifierModule
from advdefense.registry import RegistryError, build_from_spec, model_path, read_entry


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


def train_all_command(names: list[str]) -> str:
    """One multirun command that trains every member in ``names``.

    Hydra sweeps a product: when ``names`` is exactly the product of their preprocessings and
    defenses it trains just them; otherwise the product with ``skip_if_registered=true``, which
    skips members already registered with the same config.
    """
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


def load_members(names: list[str], models_dir: str | Path) -> tuple[dict[str, nn.Module], dict]:
    """Frozen member pipelines and their registry specs, by name, in the given order.

    Every missing member is named at once, with one command that trains them all.
    """
    if not names:
        raise ConfigError("model.members", names, "a non-empty list of registry member names")
    missing = [n for n in names if not model_path(models_dir, n).is_file()]
    if missing:
        what = (f"member '{missing[0]}' is" if len(missing) == 1
                else f"{len(missing)} of the {len(names)} members are")
        raise RegistryError(f"{what} not in the registry {models_dir}: {', '.join(missing)}; "
                            f"train {'it' if len(missing) == 1 else 'them'} first: "
                            f"{train_all_command(missing)}")
    modules, specs = {}, {}
    for name in names:
        path = model_path(models_dir, name)
        entry = read_entry(path)
        if entry["kind"] != "member":
            raise ConfigError("model.members", name, f"a member, but {path} holds a {entry['kind']}")
        module = build_from_spec("member", entry["spec"])
        module.load_state_dict(entry["state_dict"])
        modules[name], specs[name] = module.eval().requires_grad_(False), entry["spec"]
    return modules, specs


class StackedEnsemble(ClassifierModule):
    """Integrated model: frozen members -> concatenated logits (M x 2) -> MLP -> 2 logits.

    ``combine='vote'`` and ``'mean'`` give the baselines as the same kind of module (nothing to
    train). The ensemble is one ``nn.Module`` (``self.model``) mapping images (N, 1, 28, 28) in
    [0, 1] to (N, 2) logits, so attacks can target it end to end.

    Args:
        members: registry names of the members, e.g. ``["none-fgsm", "blur-fgsm", ...]``.
        models_dir: the registry folder.
        combine: ``mlp`` (the paper's stacker), ``vote`` or ``mean``.
        hidden: hidden widths of the MLP (the paper: two layers of 256).
        activation: MLP nonlinearity, or ``linear`` for the authors' activation-free stacker.
        skip: ``none``, or ``mean``: the MLP learns a correction to the mean of the member
            logits and starts as that mean (see :class:`advdefense.nets.StackerMLP`).
        defense: training-step strategy for the MLP's training images (default: clean only);
            with an attack inside, the stacker also learns from attacked images' logits.
        defense_target: ``ensemble`` crafts against the whole integrated model end to end;
            ``members`` splits the batch and crafts each slice against one member.
        optimizer: partial optimizer; scheduler: optional partial LR scheduler.
    """

    def __init__(self, members: list[str], models_dir: str, combine: str = "mlp",
                 hidden: list[int] | tuple[int, ...] = (256, 256), activation: str = "relu",
                 skip: str = "none",
                 defense: TrainingDefense | None = None, defense_target: str = "ensemble",
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__(optimizer, scheduler)
        check_choice("model.combine", combine, COMBINERS)
        check_choice("model.defense_target", defense_target, ["ensemble", "members"])
        self.save_hyperparameters({  # plain types only: checkpoints load with weights_only=True
            "members": [str(m) for m in members], "models_dir": str(models_dir), "combine": combine,
            "hidden": [int(h) for h in hidden], "activation": activation, "skip": skip,
            "defense_target": defense_target})
        modules, self.member_specs = load_members(list(members), models_dir)
        self.head_spec = None
        if combine == "mlp":
            from advdefense.nets import StackerMLP

            self.head_spec = {"_target_": "advdefense.nets.StackerMLP",
                              "in_features": 2 * len(modules), "hidden": [int(h) for h in hidden],
                              "activation": activation, "skip": skip}
            head = StackerMLP(**{k: v for k, v in self.head_spec.items() if k != "_target_"})
        else:
            head = None
        self.combine = combine
        self.model: MemberEnsemble = build_ensemble(combine, modules, head)
        self.defense = defense if defense is not None else TrainingDefense()
        self.defense_target = defense_target

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.parameters())

    def registry_spec(self) -> tuple[str, dict[str, Any]]:
        return "ensemble", {"combine": self.combine, "members": self.member_specs,
                            "head": self.head_spec}

    def train(self, mode: bool = True) -> StackedEnsemble:
        """Members stay in eval mode (frozen) whatever Lightning asks."""
        super().train(mode)
        self.model.members.eval()
        return self

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning restores per-module modes after validation without calling train().
        self.model.members.eval()

    def _training_batch(self, images: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.defense_target == "ensemble":
            return self.defense(self.model, images, labels, self.global_step)
        parts = [self.defense(member, x, y, self.global_step)
                 for member, x, y in zip(self.model.members.values(),
                                         images.tensor_split(len(self.model.members)),
                                         labels.tensor_split(len(self.model.members)), strict=True)
                 if len(x)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.fit_step(*self._training_batch(*batch))
