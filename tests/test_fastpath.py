"""The fast path (advdefense.fastpath.optimize, used by evaluation.threats.attackable) computes
the plain model's logits and input gradients, for members, the stacker and the baselines."""

from __future__ import annotations

import kornia.filters as KF
import pytest
import torch
from torch import nn

from advdefense.ensembles import MajorityVote, MemberMargins, build_ensemble
from advdefense.evaluation.threats import attackable
from advdefense.fastpath import FastMember, binary_squeeze, median3, optimize
from advdefense.lit.classifier import member_pipeline
from advdefense.nets import SmallCNN, StackerMLP
from advdefense.preprocess import FeatureSqueeze, Identity, feature_squeeze, squeeze_gradient
from advdefense.registry import CheckedModel


def members() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"wide": member_pipeline(Identity(), SmallCNN([8, 16], 32)),
            "squeeze": member_pipeline(FeatureSqueeze(3, 1, True), SmallCNN([4, 8], 16)),
            "blur-like": member_pipeline(nn.Identity(), SmallCNN([4, 8], 16))}


def models() -> dict[str, nn.Module]:
    head = StackerMLP(6, [16], skip="mean")
    for p in head.parameters():  # skip=mean zeroes the last layer: give the MLP a say
        nn.init.normal_(p, std=0.3)
    out = {"member": members()["squeeze"], "wide": members()["wide"],
           "stacker": build_ensemble("mlp", members(), head)}
    out |= {c: build_ensemble(c, members()) for c in ("mean", "vote")}
    return out


def images(n: int = 21, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def logits_and_grad(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = model(x)
    loss = nn.functional.cross_entropy(out, torch.arange(len(x)) % 2, reduction="sum")
    return out.detach(), torch.autograd.grad(loss, x)[0]


@pytest.mark.parametrize("name", ["member", "wide", "stacker", "mean", "vote"])
def test_fast_logits_and_input_gradients_match_plain(name: str) -> None:
    model = models()[name]
    plain = attackable(CheckedModel(model), fast=False)
    fast = attackable(CheckedModel(model))
    assert sum(isinstance(m, FastMember) for m in fast.modules()) >= 1
    x = images()  # 21 images, chunks of 8 (one thread only): a partial last chunk
    for m in fast.modules():
        if isinstance(m, FastMember):
            m.chunk = 8
    lp, gp = logits_and_grad(plain, x)
    assert gp.abs().max() > 0
    threads = torch.get_num_threads()
    try:
        for n in {1, threads}:  # chunked (one thread) and whole
            torch.set_num_threads(n)
            lf, gf = logits_and_grad(fast, x)
            torch.testing.assert_close(lf, lp, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(gf, gp, rtol=1e-4, atol=1e-6)
            with torch.inference_mode():  # the forward-only path (binary squeeze by counting)
                torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(threads)


def test_optimize_keeps_types_and_leaves_the_model_alone() -> None:
    vote = models()["vote"]
    before = {k: v.clone() for k, v in vote.state_dict().items()}
    fast = optimize(vote)
    assert isinstance(fast, MajorityVote) and fast is not vote
    assert all(isinstance(m, FastMember) for m in fast.members.values())
    assert not any(isinstance(m, FastMember) for m in vote.modules())
    assert all(p.requires_grad for p in vote.parameters())
    assert not any(p.requires_grad for p in fast.parameters())
    assert all(torch.equal(before[k], v) for k, v in vote.state_dict().items())
    # the evaluation's vote surrogate still wraps the fast vote, with the same gradient
    x = images(6)
    torch.testing.assert_close(logits_and_grad(MemberMargins(fast), x)[1],
                               logits_and_grad(MemberMargins(vote.eval()), x)[1],
                               rtol=1e-4, atol=1e-6)


def test_squeeze_surrogate_gradients_reach_the_fast_member() -> None:
    member = models()["member"]
    plain, fast = attackable(member, fast=False), attackable(member)
    x = images(5)
    st = logits_and_grad(fast, x)[1]
    for median in ("exact", "mean"):
        with squeeze_gradient(plain, 0.1, median), squeeze_gradient(fast, 0.1, median):
            gp, gf = logits_and_grad(plain, x)[1], logits_and_grad(fast, x)[1]
        torch.testing.assert_close(gf, gp, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(gf, st)  # the surrogate did change the fast gradient


def test_binary_squeeze_is_the_squeeze_value() -> None:
    g = torch.Generator().manual_seed(3)
    levels = torch.randint(0, 5, (4, 1, 28, 28), generator=g) / 4  # many ties, exact 0.5s
    for x in (levels, images(4)):
        for window in (3, 5):
            assert torch.equal(binary_squeeze(x, window), feature_squeeze(x, window, 1))


def test_median3_picks_kornias_element_ties_included() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 3, (3, 1, 28, 28), generator=g) / 2  # ties in most windows
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref, out = KF.median_blur(a, (3, 3)), median3(b, 3)
    assert torch.equal(ref, out)
    weight = torch.randn(ref.shape, generator=g)
    (ga,) = torch.autograd.grad((ref * weight).sum(), a)
    (gb,) = torch.autograd.grad((out * weight).sum(), b)
    torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-6)
