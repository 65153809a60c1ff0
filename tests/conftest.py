"""Shared fixtures: real 6-vs-7 digits and a quickly trained undefended CNN."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def mnist67_test() -> tuple[torch.Tensor, torch.Tensor]:
    """Every 6 and 7 of MNIST's test split: (1986, 1, 28, 28) in [0, 1] and labels."""
    from advdefense.data import load_mnist67

    return load_mnist67("test")


@pytest.fixture(scope="session")
def mnist67_train() -> tuple[torch.Tensor, torch.Tensor]:
    from advdefense.data import load_mnist67

    return load_mnist67("train")


def train_cnn(images: torch.Tensor, labels: torch.Tensor, epochs: int = 2, seed: int = 0,
              n: int = 4000) -> torch.nn.Module:
    """Train an undefended SmallCNN on the first ``n`` images with a plain loop (seconds)."""
    from advdefense.nets import SmallCNN

    torch.manual_seed(seed)
    net = SmallCNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y = images[:n], labels[:n]
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="session")
def undefended_cnn(mnist67_train) -> torch.nn.Module:
    """An undefended SmallCNN at >98% clean accuracy, trained once per test session."""
    return train_cnn(*mnist67_train)
