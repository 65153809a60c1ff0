"""Randomized ablation: subsets, the two-channel encoding, the fast path, the EOT forward."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advdefense.ablation import (
    AblatedClassifier,
    AblationMLP,
    RandomAblation,
    ablate,
    encode,
    find_ablated,
    sample_subsets,
)
from advdefense.checks import ConfigError
from advdefense.nets import SmallCNN


@pytest.mark.parametrize("keep", [1, 7, 45, 784])
def test_subsets_are_distinct_and_in_range(keep: int) -> None:
    s = sample_subsets(500, keep, 784, generator=torch.Generator().manual_seed(0))
    assert s.shape == (500, keep) and s.dtype == torch.long
    assert int(s.min()) >= 0 and int(s.max()) < 784
    assert all(len(set(row)) == keep for row in s.tolist())


def test_subsets_are_uniform() -> None:
    # every one of the C(5, 2) = 10 pairs of 5 pixels comes up about equally often
    s = sample_subsets(20_000, 2, 5, generator=torch.Generator().manual_seed(1))
    pairs = torch.sort(s, 1).values
    counts = torch.bincount(pairs[:, 0] * 5 + pairs[:, 1], minlength=25)
    counts = counts[counts > 0]
    assert len(counts) == 10
    expected = 2_000
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # 9 degrees of freedom, p = 0.001


def test_subsets_reject_bad_keep() -> None:
    with pytest.raises(ConfigError, match="keep"):
        sample_subsets(3, 0)
    with pytest.raises(ConfigError, match="model.net.keep"):
        RandomAblation(keep=785)


def test_ablate_keeps_exactly_keep_pixels_with_a_mask_channel() -> None:
    images = torch.rand(6, 1, 28, 28) * 0.9 + 0.1  # no zero pixels: kept values are visible
    out = ablate(images, 45, torch.Generator().manual_seed(0))
    assert out.shape == (6, 2, 28, 28)
    values, mask = out[:, 0], out[:, 1]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.flatten(1).sum(1).tolist() == [45.0] * 6
    assert torch.equal(values, images[:, 0] * mask)
    assert torch.equal(values != 0, mask.bool())


def test_fresh_subsets_per_call_and_seeded_reproducibility() -> None:
    images = torch.rand(2, 1, 28, 28)
    a, b = RandomAblation(45, seed=3), RandomAblation(45, seed=3)
    first, second = a(images), a(images)
    assert not torch.equal(first[:, 1], second[:, 1])
    assert torch.equal(first, b(images))


def test_mlp_fast_path_equals_dense_forward() -> None:
    torch.manual_seed(0)
    mlp = AblationMLP(hidden=[32, 16])
    images = torch.rand(10, 1, 28, 28)
    subsets = sample_subsets(10, 45)
    fast = mlp.forward_subsets(images.flatten(1).gather(1, subsets), subsets)
    torch.testing.assert_close(fast, mlp(encode(images, subsets)), rtol=1e-5, atol=1e-6)


def test_eval_forward_is_the_log_mean_softmax_of_n_eval_samples() -> None:
    torch.manual_seed(0)
    model = AblatedClassifier(AblationMLP([16]), keep=20, n_eval=8, seed=5).eval()
    images = torch.rand(4, 1, 28, 28)
    twin = AblatedClassifier(AblationMLP([16]), keep=20, n_eval=8, seed=5).eval()
    twin.load_state_dict(model.state_dict())
    samples = twin.sample_logits(images, 8)  # the same 8 x 4 subsets, drawn in the same order
    expected = samples.softmax(-1).mean(0).log()
    torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(model(images).exp().sum(1), torch.ones(4))


def test_training_forward_is_one_sample() -> None:
    base = AblationMLP([8])
    model = AblatedClassifier(base, keep=10, n_eval=32).train()
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 2)


@pytest.mark.parametrize("output", ["log_mean_softmax", "mean_logits"])
@pytest.mark.parametrize("base", ["mlp", "cnn"])
def test_eot_forward_is_differentiable_in_kept_pixels(output: str, base: str) -> None:
    torch.manual_seed(0)
    net = AblationMLP([16]) if base == "mlp" else SmallCNN((4, 8), 16, in_channels=2)
    model = AblatedClassifier(net, keep=30, n_eval=4, output=output).eval()
    images = torch.rand(3, 1, 28, 28, requires_grad=True)
    (grad,) = torch.autograd.grad(model(images)[:, 1].sum(), images)
    nonzero = (grad != 0).flatten(1).sum(1)
    # only kept pixels get a gradient: at most n_eval * keep per image, and some do
    assert (nonzero > 0).all() and (nonzero <= 4 * 30).all()


def test_votes_sum_to_samples_and_follow_a_constant_base() -> None:
    class Always(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([0.0, 1.0]).expand(len(x), 2)

    model = AblatedClassifier(Always(), keep=45).eval()
    counts = model.count_votes(torch.rand(7, 1, 28, 28), 300, batch_size=512)
    assert counts.tolist() == [[0, 300]] * 7


def test_votes_fast_path_matches_dense_path() -> None:
    # the same base net through forward_subsets and through the two-channel encoding
    torch.manual_seed(0)
    mlp = AblationMLP([32])

    class Dense(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = mlp

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mlp(x)

    images = torch.rand(5, 1, 28, 28)
    fast = AblatedClassifier(mlp, keep=45).eval().count_votes(
        images, 1000, 700, generator=torch.Generator().manual_seed(2))
    dense = AblatedClassifier(Dense(), keep=45).eval().count_votes(
        images, 1000, 700, generator=torch.Generator().manual_seed(2))
    assert (fast - dense).abs().max() <= 2  # float rounding may flip a near-tie vote


def test_find_ablated_and_bad_config() -> None:
    model = nn.Sequential(nn.Identity(), AblatedClassifier(AblationMLP([4]), keep=5))
    assert find_ablated(model) is model[1]
    assert find_ablated(nn.Linear(2, 2)) is None
    with pytest.raises(ConfigError, match="model.net.output"):
        AblatedClassifier(AblationMLP([4]), output="vote")
    with pytest.raises(ConfigError, match="model.net.n_eval"):
        AblatedClassifier(AblationMLP([4]), n_eval=0)
    assert math.isfinite(float(AblationMLP([4])(torch.zeros(1, 2, 28, 28)).detach().sum()))


def test_registry_round_trip(tmp_path) -> None:
    from advdefense.lit.classifier import member_pipeline
    from advdefense.preprocess import Identity
    from advdefense.registry import load_model, read_entry, save_model

    spec = {"preprocess": {"_target_": "advdefense.preprocess.Identity"},
            "net": {"_target_": "advdefense.ablation.AblatedClassifier", "keep": 20, "n_eval": 4,
                    "output": "log_mean_softmax", "seed": None,
                    "base": {"_target_": "advdefense.ablation.AblationMLP", "hidden": [16, 8]}}}
    torch.manual_seed(0)
    model = member_pipeline(Identity(), AblatedClassifier(AblationMLP([16, 8]), keep=20, n_eval=4))
    path = save_model(tmp_path / "ablation-k20.ckpt", model, "member", "ablation-k20", spec)
    assert read_entry(path)["spec"]["net"]["keep"] == 20
    loaded = load_model(path)
    ablated = find_ablated(loaded)
    assert ablated is not None and (ablated.keep, ablated.n_eval) == (20, 4)
    images = torch.rand(3, 1, 28, 28)
    ref = model[1].eval().count_votes(images, 500, generator=torch.Generator().manual_seed(0))
    got = ablated.count_votes(images, 500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ref, got)
    assert loaded(images).shape == (3, 2)
