"""Preprocessing: what each step does to images, and that gradients pass through it."""

from __future__ import annotations

import pytest
import torch

from advdefense.checks import ConfigError
from advdefense.preprocess import (
    FeatureSqueeze,
    GaussianBlur,
    Identity,
    feature_squeeze,
    gaussian_blur,
    median_filter,
    quantize,
)


def high_freq_energy(x: torch.Tensor) -> float:
    """Energy of the horizontal and vertical pixel differences."""
    return float((x.diff(dim=-1) ** 2).sum() + (x.diff(dim=-2) ** 2).sum())


def test_blur_lowers_high_frequency_energy(mnist67_test):
    x = mnist67_test[0][:32]
    out = GaussianBlur(sigma=2.0, kernel_size=9)(x)
    assert out.shape == x.shape
    assert high_freq_energy(out) < 0.3 * high_freq_energy(x)
    assert out.min() >= 0 and out.max() <= 1


def test_blur_keeps_a_constant_image_and_mass():
    x = torch.full((2, 1, 28, 28), 0.4)
    torch.testing.assert_close(gaussian_blur(x, 1.5, 7), x)


def test_median_removes_isolated_salt_pixels():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 5, 5] = x[0, 0, 20, 9] = 1.0
    x[0, 0, 10:16, 10:16] = 1.0  # a solid block survives
    out = median_filter(x, 3)
    assert out[0, 0, 5, 5] == 0 and out[0, 0, 20, 9] == 0
    assert out[0, 0, 12, 12] == 1


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_bit_depth_gives_exactly_2_to_the_bits_levels(bits):
    x = torch.linspace(0, 1, 28 * 28 * 4).reshape(4, 1, 28, 28)
    levels = quantize(x, bits).unique()
    assert len(levels) == 2**bits
    torch.testing.assert_close(levels, torch.linspace(0, 1, 2**bits))


def test_quantize_straight_through_gradient_is_identity_and_plain_is_zero():
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    (g_st,) = torch.autograd.grad(quantize(x, 1, straight_through=True).sum(), x)
    torch.testing.assert_close(g_st, torch.ones_like(x))
    (g_plain,) = torch.autograd.grad(quantize(x, 1, straight_through=False).sum(), x)
    assert g_plain.abs().sum() == 0


def test_straight_through_changes_what_adversarial_training_learns_from():
    """``preprocess.straight_through`` matters in training (the evaluation forces it on): the
    defense crafts its examples through the member's squeeze, and without the identity backward
    pass the binarizing rounding has zero gradient, so FGSM training sees the clean batch."""
    from advdefense.attacks import FGSM
    from advdefense.defenses import AdversarialTraining

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))
    x = torch.rand(8, 1, 28, 28)
    y = torch.tensor([0, 1] * 4)
    defense = AdversarialTraining(FGSM(eps=0.3), keep_clean=False)
    batches = {st: defense(torch.nn.Sequential(FeatureSqueeze(1, 1, st), net), x, y)[0]
               for st in (True, False)}
    assert torch.equal(batches[False], x)  # sign(0) = 0: nothing moved
    assert (batches[True] - x).abs().amax() == pytest.approx(0.3)


@pytest.mark.parametrize("module", [Identity(), GaussianBlur(2.0, 9), FeatureSqueeze(3, 1, True),
                                    FeatureSqueeze(3, None)])
def test_gradients_flow_through_every_preprocessing(module, mnist67_test):
    x = mnist67_test[0][:4].clone().requires_grad_(True)
    weights = torch.randn(1, 1, 28, 28)
    (grad,) = torch.autograd.grad((module(x) * weights).sum(), x)
    assert grad.abs().sum() > 0
    assert torch.isfinite(grad).all()


def test_blur_gradcheck_float64():
    x = torch.rand(1, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 1.0, 3), (x,))


def test_function_and_module_agree(mnist67_test):
    x = mnist67_test[0][:8]
    torch.testing.assert_close(GaussianBlur(1.3, 5)(x), gaussian_blur(x, 1.3, 5))
    torch.testing.assert_close(FeatureSqueeze(5, 2, False)(x), feature_squeeze(x, 5, 2, False))
    torch.testing.assert_close(Identity()(x), x)


@pytest.mark.parametrize("batch", [0, 1, 2])
def test_batch_sizes(batch):
    x = torch.rand(batch, 1, 28, 28)
    for module in (GaussianBlur(), FeatureSqueeze()):
        assert module(x).shape == (batch, 1, 28, 28)


@pytest.mark.parametrize(("cls", "kwargs", "key"), [
    (GaussianBlur, {"sigma": 0.0}, "preprocess.sigma"),
    (GaussianBlur, {"sigma": -1.0}, "preprocess.sigma"),
    (GaussianBlur, {"kernel_size": 4}, "preprocess.kernel_size"),
    (FeatureSqueeze, {"window": 2}, "preprocess.window"),
    (FeatureSqueeze, {"window": 0}, "preprocess.window"),
    (FeatureSqueeze, {"bits": 0}, "preprocess.bits"),
    (FeatureSqueeze, {"bits": 9}, "preprocess.bits"),
])
def test_bad_parameters_name_the_key(cls, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cls(**kwargs)


# --- gradient options of the squeeze (chosen at attack time; forward values never change) ---

def test_soft_round_tends_to_round_and_has_a_nonzero_derivative():
    from advdefense.preprocess import soft_round

    frac = torch.tensor([0.0, 0.1, 0.3, 0.45, 0.55, 0.7, 0.9])   # away from the thresholds k + 0.5
    y = (torch.arange(3.0)[:, None] + frac).flatten().requires_grad_(True)
    approx = soft_round(y, 0.005, 3)     # 0.05 from a threshold: off by sigmoid(-10) < 1e-4
    torch.testing.assert_close(approx, y.detach().round(), atol=1e-4, rtol=0)
    (g,) = torch.autograd.grad(soft_round(y, 0.3, 3).sum(), y)
    assert (g > 0).all()
    # steepest at a threshold, flattest half-way between two
    x = torch.tensor([0.5, 1.0], requires_grad=True)
    (gx,) = torch.autograd.grad(soft_round(x, 0.1, 3).sum(), x)
    assert gx[0] > 10 * gx[1]


def test_sigmoid_rounding_keeps_the_value_and_weights_the_gradient_near_the_threshold():
    x = torch.tensor([0.0, 0.3, 0.49, 0.51, 0.7, 1.0], requires_grad=True)
    q = quantize(x, 1, temperature=0.1)
    assert torch.equal(q.detach(), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    (g,) = torch.autograd.grad(q.sum(), x)
    assert (g > 0).all()
    assert g[2] > g[1] > g[0] and g[3] > g[4] > g[5]


def test_mean_median_gradient_keeps_the_value_and_reaches_every_pixel(mnist67_test):
    """The exact median's gradient reaches one pixel per window: a pixel that is no window's
    median gets none (measured: 11% of a digit's pixels). The window mean's reaches every one."""
    x = mnist67_test[0][:8].clone().requires_grad_(True)
    exact = FeatureSqueeze(3, 1)
    smooth = FeatureSqueeze(3, 1, temperature=0.3, median_gradient="mean")
    assert torch.equal(exact(x), smooth(x))
    (g_exact,) = torch.autograd.grad(exact(x).sum(), x)
    (g_smooth,) = torch.autograd.grad(smooth(x).sum(), x)
    assert (g_exact == 0).double().mean() > 0.05
    assert (g_smooth == 0).double().mean() == 0


def test_squeeze_gradient_context_sets_and_restores_every_squeeze():
    from advdefense.preprocess import squeeze_gradient, squeeze_modules

    model = torch.nn.Sequential(FeatureSqueeze(3, 1, straight_through=False), Identity(),
                                torch.nn.Sequential(FeatureSqueeze(1, 2)), FeatureSqueeze(1, None))
    assert len(squeeze_modules(model)) == 2          # the last one changes nothing
    x = torch.rand(4, 1, 28, 28)
    before = model(x)
    with squeeze_gradient(model, 0.2, "mean"):
        assert [(m.temperature, m.median_gradient, m.straight_through)
                for m in squeeze_modules(model)] == [(0.2, "mean", True)] * 2
        assert torch.equal(model(x), before)
    assert [(m.temperature, m.median_gradient, m.straight_through)
            for m in squeeze_modules(model)] == [(None, "exact", False), (None, "exact", True)]
    with pytest.raises(ConfigError, match="median"):
        with squeeze_gradient(model, None, "max"):
            pass


@pytest.mark.parametrize(("kwargs", "key"), [({"temperature": 0}, "preprocess.temperature"),
                                             ({"median_gradient": "max"}, "preprocess.median_gradient")])
def test_bad_gradient_options_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        FeatureSqueeze(**kwargs)
