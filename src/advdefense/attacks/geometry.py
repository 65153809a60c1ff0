"""The spatial attack's transform: a black border around the digit, then one warp.

Sign convention everywhere: ``angle`` in degrees, positive = counterclockwise as the image is
displayed (row 0 at the top); ``dx`` in pixels, positive = to the right; ``dy`` in pixels,
positive = down. Rotation is about the image centre ((W-1)/2, (H-1)/2), then the shift is
applied; bilinear interpolation, zero (black) padding (kornia ``warp_affine``).

Borders (``shrink``, one of :data:`SHRINKS`): ``"none"``; ``"kit"``, the UAE warm-up kit's
(:func:`kit_border`: TF1 bilinear resize to 24 x 24, 2 px black border; see
:mod:`advdefense.attacks.spatial` for the kit's transform as facts); ``"20x20"``, an antialiased
resize to 20 x 20 with a 4 px border (:func:`shrink_pad`). :func:`spatial_transform` applies a
border and :func:`warp`; :func:`sampling_grids` and :func:`warp_many` compute the same warp for
many transforms at once (the grid search). The evaluation's spatial sweep uses the same warp.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.transform import resize, warp_affine
from torch import nn

from advdefense.checks import check_choice

# The digit's border before rotating and shifting: "none"; "kit" = the UAE warm-up kit's
# (resize to 24 x 24, TF1 bilinear, 2 px black border); "20x20" = resize to 20 x 20
# (bilinear, antialiased) + 4 px black border (the former uae_warmup preset).
SHRINKS = ("none", "kit", "20x20")


def shrink_pad(images: torch.Tensor, size: int = 20) -> torch.Tensor:
    """Resize (N, C, 28, 28) digits to ``size`` x ``size`` (bilinear, antialiased) and pad
    back to 28 x 28 with a black border ((28 - size) / 2 = 4 px on each side for 20)."""
    h = images.shape[-1]
    pad = (h - size) // 2
    small = resize(images, (size, size), interpolation="bilinear", antialias=True)
    return nn.functional.pad(small, (pad, h - size - pad, pad, h - size - pad)).clamp_(0.0, 1.0)


def legacy_resize_weights(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64 weights of TensorFlow 1's bilinear resize along one axis.

    ``align_corners=False`` without half-pixel centres: output pixel ``j`` reads the source
    at ``s = j * n_in / n_out``, weight ``1 - (s - floor(s))`` on ``floor(s)`` and
    ``s - floor(s)`` on the next pixel (clamped to the last one). Rows sum to 1.
    """
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor()
    frac = src - lo
    lo = lo.long().clamp(0, n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w


def kit_border(images: torch.Tensor, size: int = 24) -> torch.Tensor:
    """The UAE warm-up kit's black border: resize (N, C, H, W) digits to ``size`` x ``size``
    with TF1's bilinear resize (:func:`legacy_resize_weights`) and place them in the centre of
    an H x W black frame (2 px on each side for 28 -> 24: the kit's 4 px pad to 32 x 32 and
    its centre crop back to 28 x 28). Values stay in [0, 1]."""
    h, w = images.shape[-2:]
    wy = legacy_resize_weights(h, size).to(images)
    wx = legacy_resize_weights(w, size).to(images)
    small = torch.einsum("yh,nchw,xw->ncyx", wy, images, wx)
    top, left = (h - size) // 2, (w - size) // 2
    out = nn.functional.pad(small, (left, w - size - left, top, h - size - top))
    return out.clamp_(0.0, 1.0).contiguous()


def add_border(images: torch.Tensor, shrink: str | bool = "none") -> torch.Tensor:
    """``images`` (N, C, 28, 28) with the border ``shrink`` (one of :data:`SHRINKS`; True is
    ``"20x20"``, False ``"none"``) applied; ``"none"`` returns ``images`` itself."""
    kind = check_shrink(shrink)
    if kind == "kit":
        return kit_border(images)
    if kind == "20x20":
        return shrink_pad(images)
    return images


def check_shrink(shrink: str | bool | None) -> str:
    """The border's name: one of :data:`SHRINKS` (True = ``"20x20"``, False = ``"none"``);
    raises ConfigError otherwise."""
    if isinstance(shrink, bool):
        return "20x20" if shrink else "none"
    check_choice("attack.shrink", shrink, list(SHRINKS))
    return str(shrink)


def affine_matrices(angle: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
                    size: tuple[int, int] = (28, 28)) -> torch.Tensor:
    """(N, 2, 3) source-to-destination matrices: rotate ``angle`` degrees counterclockwise
    about the centre, then shift by (dx, dy) pixels (+x right, +y down)."""
    theta = angle * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    cx, cy = (size[1] - 1) / 2.0, (size[0] - 1) / 2.0
    # y points down, so a visually counterclockwise rotation is [[c, s], [-s, c]].
    tx = cx - cos * cx - sin * cy + dx
    ty = cy + sin * cx - cos * cy + dy
    row0 = torch.stack([cos, sin, tx], -1)
    row1 = torch.stack([-sin, cos, ty], -1)
    return torch.stack([row0, row1], -2)


def warp(images: torch.Tensor, angle: torch.Tensor, dx: torch.Tensor,
         dy: torch.Tensor) -> torch.Tensor:
    """Rotate and shift each image by its own parameters (each (N,)); bilinear, black fill."""
    m = affine_matrices(angle.to(images), dx.to(images), dy.to(images), images.shape[-2:])
    out = warp_affine(images, m, dsize=tuple(images.shape[-2:]), mode="bilinear",
                      padding_mode="zeros", align_corners=True)
    return out.clamp_(0.0, 1.0)


def sampling_grids(params: torch.Tensor, size: tuple[int, int] = (28, 28),
                   dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, H, W, 2) ``grid_sample`` grids of the (T, 3) (angle, dx, dy) transforms.

    The same warp as :func:`warp` (bilinear, zeros, ``align_corners=True``): output pixel
    (x, y) samples the source at ``A^-1 ((x, y) - t)`` for the source-to-destination matrix
    ``[A | t]`` of :func:`affine_matrices`, in normalized coordinates. Built in float64 and
    cast, so a grid computed once serves every image (the attack caches them per device and
    dtype and warps many images with one ``grid_sample`` call per block of transforms).
    """
    h, w = int(size[0]), int(size[1])
    p = params.detach().to("cpu", torch.float64)
    m = affine_matrices(p[:, 0], p[:, 1], p[:, 2], (h, w))
    inv = torch.linalg.inv(m[:, :, :2])
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    dst = torch.stack([xs, ys], -1)[None] - m[:, None, None, :, 2]  # (T, H, W, 2)
    src = torch.einsum("tij,thwj->thwi", inv, dst)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=torch.float64)
    return (src * scale - 1.0).to(device=device, dtype=dtype).contiguous()


def warp_many(images: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Every image under every grid: images (N, 1, H, W), grids (B, H, W, 2) -> (B, N, H, W).

    One ``grid_sample`` call: the N single-channel images are the channels of one input, so
    each grid is applied to all of them (no per-pair grid copies). Clamped to [0, 1] like
    :func:`warp`.
    """
    b, n = grids.shape[0], images.shape[0]
    src = images[:, 0].unsqueeze(0).expand(b, n, *images.shape[-2:])
    out = nn.functional.grid_sample(src, grids, mode="bilinear", padding_mode="zeros",
                                    align_corners=True)
    return out.clamp_(0.0, 1.0)


def spatial_transform(images: torch.Tensor, angle: torch.Tensor | float,
                      dx: torch.Tensor | float, dy: torch.Tensor | float,
                      shrink: str | bool = "none") -> torch.Tensor:
    """The transform the attack applies: the border ``shrink`` (:func:`add_border`), then
    :func:`warp`.

    Shape: images (N, 1, 28, 28) in [0, 1]; angle (degrees), dx, dy (pixels) scalars or (N,).
    """
    n = images.shape[0]
    params = [torch.as_tensor(v, dtype=images.dtype, device=images.device).expand(n)
              for v in (angle, dx, dy)]
    return warp(add_border(images, shrink), *params)
