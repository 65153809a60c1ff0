"""Preprocessing defenses as function + module pairs (Kornia, differentiable, any device).

Every module maps (N, 1, H, W) float images in [0, 1] to the same shape and range, and is
meant to sit in front of a network: ``nn.Sequential(preprocess, net)``. Attacks that get the
whole pipeline therefore see through the preprocessing.

Convention:
    ``sigma`` and ``kernel_size`` are in pixels; ``bits`` is the bit depth kept per pixel
    (``bits=1`` binarizes at 0.5, ``bits=8`` is ordinary 8-bit quantization).
"""

from __future__ import annotations

import kornia.filters as KF
import torch
from torch import nn

from advdefense.checks import ConfigError, check_range


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


def quantize(images: torch.Tensor, bits: int, straight_through: bool = True) -> torch.Tensor:
    """Reduce bit depth to ``2**bits`` evenly spaced levels in [0, 1].

    The rounding has zero gradient almost everywhere; with ``straight_through=True`` the
    backward pass treats it as the identity (BPDA, Athalye et al. 2018), so gradient attacks
    see through it while the forward value is exactly quantized.

    Args:
        images: (N, C, H, W) float in [0, 1].
        bits: levels kept per pixel, 1..8.
        straight_through: identity gradient for the rounding.
    """
    levels = 2**bits - 1
    q = torch.round(images * levels) / levels
    return images + (q - images).detach() if straight_through else q


def median_filter(images: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Median over a ``window`` x ``window`` neighbourhood (odd window; 1 = no-op)."""
    if window == 1:
        return images
    return KF.median_blur(images, (window, window))


def feature_squeeze(images: torch.Tensor, window: int = 3, bits: int | None = 1,
                    straight_through: bool = True) -> torch.Tensor:
    """Feature squeezing (Xu et al. 2017): median filter then bit-depth reduction.

    Args:
        images: (N, C, H, W) float in [0, 1].
        window: odd median window in pixels (1 disables the median).
        bits: bit depth kept (None disables the reduction).
        straight_through: identity gradient for the rounding, see :func:`quantize`.

    Returns:
        (N, C, H, W) float in [0, 1].
    """
    out = median_filter(images, window)
    if bits is not None:
        out = quantize(out, bits, straight_through)
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
    """Module form of :func:`feature_squeeze`, with its arguments checked at construction."""

    name = "squeeze"

    def __init__(self, window: int = 3, bits: int | None = 1, straight_through: bool = True) -> None:
        super().__init__()
        if not isinstance(window, int) or window < 1 or window % 2 == 0 or window > 27:
            raise ConfigError(
                "preprocess.window", window,
                "an odd integer in [1, 27] (even windows shift the image by half a pixel)")
        if bits is not None and (not isinstance(bits, int) or not 1 <= bits <= 8):
            raise ConfigError("preprocess.bits", bits, "an integer in [1, 8], or null to disable")
        self.window, self.bits, self.straight_through = window, bits, bool(straight_through)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return feature_squeeze(images, self.window, self.bits, self.straight_through)

    def extra_repr(self) -> str:
        return f"window={self.window}, bits={self.bits}, straight_through={self.straight_through}"
