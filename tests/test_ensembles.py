"""Ensembles: stacker = MLP on concatenated member logits, vote = majority, mean = mean."""

from __future__ import annotations

import torch
from torch import nn

from advdefense.ensembles import (
    MajorityVote,
    MeanLogits,
    MemberMargins,
    StackedLogits,
    member_names,
)
from advdefense.nets import StackerMLP


class Fixed(nn.Module):
    """A member whose logits are a fixed linear function of the mean pixel."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return torch.stack([self.a * m, self.b * m + 0.1], 1)


def members():
    return {"m1": Fixed(1.0, -1.0), "m2": Fixed(-2.0, 3.0), "m3": Fixed(0.5, 0.4)}


def test_stacker_equals_mlp_on_concatenated_logits():
    torch.manual_seed(0)
    head = StackerMLP(6, [16, 16])
    model = StackedLogits(members(), head)
    x = torch.rand(7, 1, 28, 28)
    feats = torch.cat([m(x) for m in members().values()], 1)
    torch.testing.assert_close(model(x), head(feats))


def test_vote_is_the_majority_of_member_predictions():
    x = torch.rand(50, 1, 28, 28)
    preds = torch.stack([m(x).argmax(1) for m in members().values()], 1)
    majority = (preds.sum(1) >= 2).long()
    assert torch.equal(MajorityVote(members())(x).argmax(1), majority)


def test_vote_gradient_is_straight_through_not_zero():
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    (grad,) = torch.autograd.grad(MajorityVote(members())(x)[:, 1].sum(), x)
    assert grad.abs().sum() > 0


def test_mean_is_the_mean_of_logits():
    x = torch.rand(5, 1, 28, 28)
    expected = torch.stack([m(x) for m in members().values()]).mean(0)
    torch.testing.assert_close(MeanLogits(members())(x), expected)


def test_linear_stacker_is_linear():
    head = StackerMLP(6, [8, 8], activation="linear")
    a, b = torch.randn(3, 6), torch.randn(3, 6)
    bias = head(torch.zeros(1, 6))
    torch.testing.assert_close(head(a + b) - bias, (head(a) - bias) + (head(b) - bias))


def test_member_names_through_wrappers_and_none_for_a_member():
    from advdefense.registry import CheckedModel

    ens = MeanLogits(members())
    assert member_names(ens) == ["m1", "m2", "m3"]
    assert member_names(CheckedModel(ens, "mean", "ensemble")) == ["m1", "m2", "m3"]
    assert member_names(CheckedModel(Fixed(1.0, 1.0), "m1")) == []
    assert member_names(nn.Sequential(nn.Identity(), Fixed(1.0, 1.0))) == []


def test_skip_mean_stacker_starts_as_the_logit_mean_and_learns_a_correction():
    import pytest

    from advdefense.checks import ConfigError

    torch.manual_seed(0)
    model = StackedLogits(members(), StackerMLP(6, [16, 16], skip="mean"))
    x = torch.rand(9, 1, 28, 28)
    torch.testing.assert_close(model(x), MeanLogits(members())(x))
    y = torch.randint(0, 2, (9,))
    opt = torch.optim.SGD(model.head.parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert not torch.allclose(model(x), MeanLogits(members())(x))  # the MLP's correction moved
    with pytest.raises(ConfigError, match="model.skip"):
        StackerMLP(6, [8], skip="max")
    with pytest.raises(ConfigError, match="multiple of num_classes"):
        StackerMLP(5, [8], skip="mean")


def test_member_margins_keep_the_votes_value_and_take_the_median_members_gradient():
    """Confident members saturate the soft vote; the surrogate's gradient is the deciding
    (median) member's margin, whatever the others' confidence."""
    confident = {"m1": Fixed(100.0, -100.0), "m2": Fixed(-200.0, 300.0), "m3": Fixed(50.0, 40.0)}
    vote = MajorityVote(confident)
    x = torch.rand(5, 1, 28, 28) * 0.5 + 0.25          # mean pixel ~0.5: d = -100, 250, -5
    assert torch.equal(MemberMargins(vote)(x), vote(x))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(MemberMargins(vote)(x)[:, 1].sum(), x)
    # the median of d = (b - a) * mean + 0.1 is member m3's: d/dx (d3 / 2) = -10 / 2 / 784
    torch.testing.assert_close(grad, torch.full_like(x, -5.0 / 784))
    (own,) = torch.autograd.grad(vote(x)[:, 1].sum(), x)
    assert own.abs().max() < 0.1 * grad.abs().max()   # the soft vote is saturated: tie-break only


def test_member_margins_need_a_vote():
    import pytest

    with pytest.raises(TypeError, match="MajorityVote"):
        MemberMargins(MeanLogits(members()))
