"""Ensembles of members as plain ``nn.Module``s (the paper's integrated model and baselines).

Every ensemble maps images (N, 1, 28, 28) in [0, 1] to (N, 2) logits end to end, each member
applying its own preprocessing, so an attack can target the whole integrated model.
"""

from __future__ import annotations

import torch
from torch import nn

from advdefense.checks import ConfigError, check_choice

COMBINERS = ("mlp", "vote", "mean")


class MemberEnsemble(nn.Module):
    """Base: runs the named members and combines their logits.

    Args:
        members: name -> member pipeline, each (N, 1, 28, 28) -> (N, 2) logits.
    """

    def __init__(self, members: dict[str, nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("model.members", [], "at least one member name")
        self.members = nn.ModuleDict(members)

    def member_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, M, 2) logits of the M members, in the order of ``self.members``."""
        return torch.stack([m(images) for m in self.members.values()], dim=1)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_logits(images))


class StackedLogits(MemberEnsemble):
    """The integrated model: an MLP over the concatenated member logits (M x 2 features)."""

    def __init__(self, members: dict[str, nn.Module], head: nn.Module) -> None:
        super().__init__(members)
        self.head = head

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        return self.head(logits.flatten(1))


class MajorityVote(MemberEnsemble):
    """Majority vote of the members' predicted classes.

    The output is (N, 2) vote fractions plus a tie-break of 1e-3 x the mean member logit, so
    ``argmax`` is the majority class (ties go to the class with the larger mean logit). Hard
    votes have zero gradient, so the backward pass is straight-through: it is the gradient of
    the members' mean softmax probabilities (a soft vote), and white-box attacks see through
    the vote instead of being masked by it.
    """

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        soft = logits.softmax(2).mean(1)
        hard = nn.functional.one_hot(logits.argmax(2), logits.shape[2]).to(soft.dtype).mean(1)
        return soft + (hard - soft).detach() + 1e-3 * logits.mean(1)


class MemberMargins(nn.Module):
    """Attack surrogate of a :class:`MajorityVote`: its exact output, the gradient of the
    members' margins.

    The vote's own gradient (the soft vote) vanishes where members are confident: their
    softmax saturates, and only the 1e-3 mean-logit tie-break is left. This module's forward
    value is the vote's output, bit for bit, so an attack judges success on the real vote; its
    backward pass is that of the logits ``[-m / 2, m / 2]``, where ``m`` is the median over
    the members of the logit difference ``z_7 - z_6`` (for an even number of members, the mean
    of the two middle ones). The majority flips when the median member does, so raising the
    loss of the true class moves exactly the member(s) that decide the vote, whatever their
    confidence, and the gradient is never zero while those members' logits depend on the input.

    Shape: images (N, 1, 28, 28) in [0, 1] -> (N, 2), the values of ``vote(images)``.
    """

    def __init__(self, vote: MajorityVote) -> None:
        super().__init__()
        if not isinstance(vote, MajorityVote):
            raise TypeError(f"MemberMargins needs a MajorityVote, got {type(vote).__name__}")
        self.vote = vote

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.vote.member_logits(images)                     # (N, M, 2)
        out = self.vote.combine(logits)
        diff = (logits[..., 1] - logits[..., 0]).sort(1).values      # (N, M), ascending
        m = diff.shape[1]
        median = (diff[:, (m - 1) // 2] + diff[:, m // 2]) / 2
        surrogate = torch.stack([-median / 2, median / 2], 1)
        return out.detach() + (surrogate - surrogate.detach())


class MeanLogits(MemberEnsemble):
    """The mean of the members' logits."""

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.mean(1)


def build_ensemble(combine: str, members: dict[str, nn.Module], head: nn.Module | None = None
                   ) -> MemberEnsemble:
    """Build the ensemble of kind ``combine`` ('mlp', 'vote' or 'mean') over ``members``."""
    check_choice("model.combine", combine, COMBINERS)
    if combine == "mlp":
        if head is None:
            raise ConfigError("model.head", None, "an MLP head is required for combine='mlp'")
        return StackedLogits(members, head)
    return MajorityVote(members) if combine == "vote" else MeanLogits(members)


def member_names(model: nn.Module) -> list[str]:
    """The member names of ``model`` if it is an ensemble or wraps one in ``.model`` (a loaded
    registry entry), else []."""
    inner = getattr(model, "model", model)
    for m in (model, inner):
        if isinstance(m, MemberEnsemble):
            return list(m.members.keys())
    return []
