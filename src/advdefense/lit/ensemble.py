"""``StackedEnsemble``: the integrated model over frozen members (and the vote / mean baselines).

It receives its members and its head as modules and opens no file. Whoever builds it loads the
members: :func:`advdefense.cli.stacker.stacked_ensemble` for ``python train.py model=stacker``
(from the registry, :func:`advdefense.registry.load_members`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from advdefense.checks import ConfigError, check_choice
from advdefense.defenses import TrainingDefense
from advdefense.ensembles import COMBINERS, MemberEnsemble, build_ensemble
from advdefense.lit.base import ClassifierModule


class StackedEnsemble(ClassifierModule):
    """Integrated model: frozen members -> concatenated logits (M x 2) -> head -> 2 logits.

    ``combine='vote'`` and ``'mean'`` give the baselines as the same kind of module (nothing to
    train). The ensemble is one ``nn.Module`` (``self.model``) mapping images (N, 1, 28, 28) in
    [0, 1] to (N, 2) logits, so attacks can target it end to end.

    Args:
        members: name -> member pipeline, (N, 1, 28, 28) in [0, 1] -> (N, 2) logits, in order;
            they are frozen here (eval mode, no gradients) and stay so.
        head: for ``combine='mlp'``, the trained module mapping the (N, 2 M) concatenated
            member logits to (N, 2) logits (e.g. :class:`advdefense.nets.StackerMLP`); None
            for ``vote`` and ``mean``.
        combine: ``mlp`` (the paper's stacker), ``vote`` or ``mean``.
        member_specs: name -> registry spec of each member, and ``head_spec`` the head's
            (a ``_target_`` dict): what :meth:`registry_spec` saves, so the registry can
            rebuild the model. Optional for a module that is never registered.
        defense: training-step strategy for the head's training images (default: clean only);
            with an attack inside, the stacker also learns from attacked images' logits.
        defense_target: ``ensemble`` crafts against the whole integrated model end to end;
            ``members`` splits the batch and crafts each slice against one member.
        optimizer: partial optimizer; scheduler: optional partial LR scheduler.
    """

    def __init__(self, members: Mapping[str, nn.Module], head: nn.Module | None = None,
                 combine: str = "mlp", member_specs: Mapping[str, dict[str, Any]] | None = None,
                 head_spec: dict[str, Any] | None = None,
                 defense: TrainingDefense | None = None, defense_target: str = "ensemble",
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__(optimizer, scheduler)
        check_choice("model.combine", combine, COMBINERS)
        check_choice("model.defense_target", defense_target, ["ensemble", "members"])
        members = dict(members)
        if combine != "mlp" and head is not None:
            raise ConfigError("model.head", type(head).__name__, f"None for combine={combine!r} "
                              "(only combine='mlp' has a head)")
        if member_specs is not None and list(member_specs) != list(members):
            raise ConfigError("member_specs", list(member_specs),
                              f"one spec per member, in the members' order {list(members)}")
        self.save_hyperparameters({  # plain types only: checkpoints load with weights_only=True
            "members": list(members), "combine": combine, "head": head_spec,
            "defense_target": defense_target})
        for member in members.values():
            member.eval().requires_grad_(False)
        self.combine = combine
        self.member_specs = dict(member_specs) if member_specs is not None else None
        self.head_spec = head_spec
        self.model: MemberEnsemble = build_ensemble(combine, members, head)
        self.defense = defense if defense is not None else TrainingDefense()
        self.defense_target = defense_target

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.parameters())

    def registry_spec(self) -> tuple[str, dict[str, Any]]:
        """``("ensemble", {"combine", "members": {name: spec}, "head": spec or None})``."""
        if self.member_specs is None or (self.combine == "mlp" and self.head_spec is None):
            raise ValueError("this StackedEnsemble was built without member_specs / head_spec, "
                             "so the registry could not rebuild it; pass them to register it")
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
