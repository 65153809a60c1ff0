"""One place for input checks at public entry points.

Every public function that takes images calls :func:`check_images`; every config-driven
constructor raises :class:`ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


class ConfigError(ValueError):
    """A configuration value is outside what is allowed.

    The message always names the key, the offending value and the allowed range or choices,
    so that the user can fix the command line without reading the code.
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config value {key}={value!r}: {allowed}")


class ImageError(ValueError):
    """Images handed to a model or an attack are not (N, 1, 28, 28) float in [0, 1]."""


def check_images(images: torch.Tensor, name: str = "images", channels: int | None = 1,
                 size: tuple[int, int] | None = (28, 28)) -> None:
    """Raise :class:`ImageError` unless ``images`` is a float (N, C, H, W) batch in [0, 1].

    Args:
        images: tensor to check.
        name: how the tensor is called in the error message.
        channels: required C, or None for any.
        size: required (H, W), or None for any.
    """
    if not isinstance(images, torch.Tensor):
        raise ImageError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ImageError(
            f"{name} must have shape (N, 1, 28, 28), got {tuple(images.shape)}; "
            "add a batch axis with images.unsqueeze(0) or a channel axis with unsqueeze(1)"
        )
    n, c, h, w = images.shape
    if (channels is not None and c != channels) or (size is not None and (h, w) != tuple(size)):
        want = f"(N, {channels if channels is not None else 'C'}, " + (
            f"{size[0]}, {size[1]})" if size is not None else "H, W)")
        raise ImageError(f"{name} must have shape {want}, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ImageError(
            f"{name} must be a floating point tensor in [0, 1], got dtype {images.dtype}; "
            "convert uint8 pixels with images.float() / 255"
        )
    if images.numel() == 0:
        return
    if torch.isnan(images).any():
        raise ImageError(f"{name} contains NaN")
    lo, hi = float(images.detach().min()), float(images.detach().max())
    if lo < 0.0 or hi > 1.0:
        raise ImageError(
            f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "if they are 0-255 pixels divide by 255, if they are normalized undo the normalization"
        )


def check_labels(labels: torch.Tensor, n: int, num_classes: int = 2) -> None:
    """Raise ValueError unless ``labels`` is an integer vector of length ``n`` in [0, num_classes)."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] != n:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D tensor of length {n}, got {shape}")
    if labels.is_floating_point():
        raise ValueError(f"labels must be integers (0 = digit 6, 1 = digit 7), got {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got {labels.unique().tolist()}")


def check_range(key: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless lo <= value <= hi (bounds optionally open)."""
    ok = isinstance(value, int | float) and value == value  # rejects NaN and non-numbers
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(key, value, f"must be a number in {left}{lo_s}, {hi_s}{right}")


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, value, f"must be one of {choices}")


def check_int(key: str, value: Any, lo: int = 1, what: str = "") -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= ``lo`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(key, value, f"must be an integer >= {lo}{what}")


def check_writable(key: str, folder: str | Path, need_bytes: int = 0) -> None:
    """Raise :class:`ConfigError` unless files can be written into ``folder`` (created later).

    An existing folder gets a real probe (a small file written, synced and removed), which
    catches read-only mounts and permissions; a folder still to be created needs a writable
    existing parent. With ``need_bytes``, the disk must also have that much space free. Nothing
    is created.
    """
    folder = Path(folder)
    fix = f"choose another folder with {key}=/elsewhere"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(key, str(folder), f"{existing} is a file, not a folder: remove it or {fix}")
    try:
        if existing == folder:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
            try:
                os.write(fd, b"\0" * 512)
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(tmp)
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, f"cannot create it: {existing} is not writable")
    except OSError as exc:
        raise ConfigError(key, str(folder), f"is not writable ({exc.strerror or exc}); fix its "
                          f"permissions or {fix}") from None
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise ConfigError(key, str(folder), f"its disk has {free / 2**20:.1f} MiB free, this run "
                          f"needs about {need_bytes / 2**20:.1f} MiB there: free some space or {fix}")
