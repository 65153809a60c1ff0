"""Preprocessing defenses as function + module pairs (Kornia, differentiable, any device).

Every module maps (N, 1, H, W) float images in [0, 1] to the same shape and range, and is
meant to sit in front of a network: ``nn.Sequential(preprocess, net)``. Attacks that get the
whole pipeline therefore see through the preprocessing.

Convention:
    ``sigma`` and ``kernel_size`` are in pixels; ``bits`` is the bit depth kept per pixel
    (``bits=1`` binarizes at 0.5, ``bits=8`` is ordinary 8-bit quantization).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kornia.filters as KF
import torch
from torch import nn

from advdefense.checks import ConfigError, check_choice, check_range


def gaussian_blur(images: torch.Tensor, sigma: float = 2.0, kernel_size: int = 9) -> torch.Tensor:
    """Blur images with an isotropic Gaussian (reflect padding keeps the size).

    Args:
        images: (N, C, H, W) float in [0, 1].
        sigma: standard deviation in pixels, > 0.
        kernel_size: odd window width in pixels.

    Returns:
        (N, C, H, W) float in [0, 1].
    """
    return KF.gaussian_blur2d(images, (kernel_size, kernel_size), (sigma, sigma), border_type="reflect")


def soft_round(levels_value: torch.Tensor, temperature: float, levels: int) -> torch.Tensor:
    """A smooth stand-in for ``round`` on [0, levels], used only for its gradient.

    The sum of sigmoids ``sum_j sigmoid((y - j - 0.5) / temperature)`` over the rounding
    thresholds ``j + 0.5`` (j = 0 .. levels - 1) tends to ``round(y)`` as the temperature goes to
    0 and has a nonzero derivative everywhere, largest at the thresholds. Only the five
    thresholds nearest ``y`` are evaluated; those further below count as 1 and those further
    above as 0 (off by at most ``sigmoid(-2.5 / temperature)`` each, with a zero derivative).

    Args:
        levels_value: ``y``, any shape, in level units [0, levels].
        temperature: > 0, in level units (1 = one quantization step).
        levels: number of steps, ``2**bits - 1``.
    """
    nearest = levels_value.detach().floor().clamp(0, levels - 1)
    offsets = torch.arange(-2, 3, device=levels_value.device, dtype=levels_value.dtype)
    thresholds = nearest.unsqueeze(-1) + offsets                     # (..., 5) threshold indices
    valid = (thresholds >= 0) & (thresholds <= levels - 1)
    terms = torch.sigmoid((levels_value.unsqueeze(-1) - thresholds - 0.5) / temperature)
    return (terms * valid).sum(-1) + (nearest - 2).clamp(min=0)


def quantize(images: torch.Tensor, bits: int, straight_through: bool = True,
             temperature: float | None = None) -> torch.Tensor:
    """Reduce bit depth to ``2**bits`` evenly spaced levels in [0, 1].

    The forward value is always exactly quantized; only the backward pass differs. The
    rounding has zero gradient almost everywhere, so:

    * ``temperature`` set: the gradient of a steep sigmoid surrogate of the rounding
      (:func:`soft_round`), nonzero everywhere and largest near the thresholds, where a small
      change flips a level. ``temperature`` is in units of one quantization step (for
      ``bits=1``, pixel-intensity units); smaller is steeper. Overrides ``straight_through``.
    * else ``straight_through=True``: the backward pass treats the rounding as the identity
      (BPDA, Athalye et al. 2018).
    * else: the true, zero, gradient.

    Args:
        images: (N, C, H, W) float in [0, 1].
        bits: levels kept per pixel, 1..8.
        straight_through: identity gradient for the rounding.
        temperature: > 0 for the sigmoid-surrogate gradient, or None.
    """
    levels = 2**bits - 1
    q = torch.round(images * levels) / levels
    if temperature is not None:
        soft = soft_round(images * levels, float(temperature), levels) / levels
        return soft + (q - soft).detach()
    return images + (q - images).detach() if straight_through else q


MEDIAN_GRADIENTS = ("exact", "mean")


def median_filter(images: torch.Tensor, window: int = 3, gradient: str = "exact") -> torch.Tensor:
    """Median over a ``window`` x ``window`` neighbourhood (odd window; 1 = no-op).

    The median's exact gradient reaches only the one pixel that is the median of each window:
    a pixel that is no window's median gets none (11% of a test digit's pixels, 20% of those
    in [0.2, 0.8] that eps = 0.3 could push across a binarizing threshold, measured on a
    trained squeeze member). ``gradient="mean"`` keeps the exact median's value but
    back-propagates as the window mean (a box filter, BPDA): every pixel of the window gets a
    share, as if the median were its smooth neighbour, the mean.
    """
    if window == 1:
        return images
    out = KF.median_blur(images, (window, window))
    if gradient == "mean":
        mean = KF.box_blur(images, (window, window), border_type="reflect")
        return mean + (out - mean).detach()
    return out


def feature_squeeze(images: torch.Tensor, window: int = 3, bits: int | None = 1,
                    straight_through: bool = True, temperature: float | None = None,
                    median_gradient: str = "exact") -> torch.Tensor:
    """Feature squeezing (Xu et al. 2017): median filter then bit-depth reduction.

    Args:
        images: (N, C, H, W) float in [0, 1].
        window: odd median window in pixels (1 disables the median).
        bits: bit depth kept (None disables the reduction).
        straight_through: identity gradient for the rounding, see :func:`quantize`.
        temperature: sigmoid-surrogate gradient for the rounding instead, see :func:`quantize`.
        median_gradient: ``exact`` or ``mean``, see :func:`median_filter`.

    Returns:
        (N, C, H, W) float in [0, 1]; the gradient options never change it.
    """
    out = median_filter(images, window, median_gradient)
    if bits is not None:
        out = quantize(out, bits, straight_through, temperature)
    return out


class Identity(nn.Module):
    """The ``none`` preprocessing: returns its input."""

    name = "none"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images


class GaussianBlur(nn.Module):
    """Module form of :func:`gaussian_blur`, with its arguments checked at construction."""

    name = "blur"

    def __init__(self, sigma: float = 2.0, kernel_size: int = 9) -> None:
        super().__init__()
        check_range("preprocess.sigma", sigma, 0.0, None, lo_open=True)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError("preprocess.kernel_size", kernel_size, "an odd positive integer")
        self.sigma, self.kernel_size = float(sigma), int(kernel_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(images, self.sigma, self.kernel_size)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, kernel_size={self.kernel_size}"


class FeatureSqueeze(nn.Module):
    """Module form of :func:`feature_squeeze`, with its arguments checked at construction.

    The backward pass can be chosen at attack time without retraining, by setting attributes
    (on a copy, or inside :func:`squeeze_gradient`): ``straight_through`` (identity gradient
    for the rounding), ``temperature`` (a sigmoid surrogate's gradient for it instead) and
    ``median_gradient`` (``exact`` or ``mean``). The forward value never changes.
    """

    name = "squeeze"

    def __init__(self, window: int = 3, bits: int | None = 1, straight_through: bool = True,
                 temperature: float | None = None, median_gradient: str = "exact") -> None:
        super().__init__()
        if not isinstance(window, int) or window < 1 or window % 2 == 0 or window > 27:
            raise ConfigError(
                "preprocess.window", window,
                "an odd integer in [1, 27] (even windows shift the image by half a pixel)")
        if bits is not None and (not isinstance(bits, int) or not 1 <= bits <= 8):
            raise ConfigError("preprocess.bits", bits, "an integer in [1, 8], or null to disable")
        self.window, self.bits, self.straight_through = window, bits, bool(straight_through)
        self.temperature = check_temperature("preprocess.temperature", temperature)
        check_choice("preprocess.median_gradient", median_gradient, MEDIAN_GRADIENTS)
        self.median_gradient = median_gradient

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return feature_squeeze(images, self.window, self.bits, self.straight_through,
                               self.temperature, self.median_gradient)

    def extra_repr(self) -> str:
        extra = "" if self.temperature is None else f", temperature={self.temperature}"
        extra += "" if self.median_gradient == "exact" else f", median_gradient={self.median_gradient}"
        return (f"window={self.window}, bits={self.bits}, "
                f"straight_through={self.straight_through}{extra}")


def check_temperature(key: str, temperature: float | None) -> float | None:
    """``temperature`` as a float > 0, or None; ConfigError naming ``key`` otherwise."""
    if temperature is None:
        return None
    check_range(key, temperature, 0.0, None, lo_open=True)
    return float(temperature)


def squeeze_modules(model: nn.Module) -> list[FeatureSqueeze]:
    """The feature squeezes in ``model`` that change images (a median or a rounding), by type."""
    return [m for m in model.modules()
            if isinstance(m, FeatureSqueeze) and (m.bits is not None or m.window > 1)]


@contextlib.contextmanager
def squeeze_gradient(model: nn.Module, temperature: float | None = None,
                     median: str = "exact") -> Iterator[nn.Module]:
    """Inside the block every feature squeeze of ``model`` back-propagates through the given
    surrogate: the rounding through a sigmoid of ``temperature`` (None: straight-through), the
    median exactly or as the window mean (``median``). Every setting is restored afterwards.

    Forward values are unchanged, so an attack run inside the block is judged on the real model.
    """
    temperature = check_temperature("temperature", temperature)
    check_choice("median", median, MEDIAN_GRADIENTS)
    saved = [(m, m.temperature, m.straight_through, m.median_gradient)
             for m in squeeze_modules(model)]
    try:
        for m, *_ in saved:
            m.temperature, m.straight_through, m.median_gradient = temperature, True, median
        yield model
    finally:
        for m, t, st, med in saved:
            m.temperature, m.straight_through, m.median_gradient = t, st, med
