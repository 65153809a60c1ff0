"""Small models with known behaviour for the attack tests."""

from __future__ import annotations

import torch
from torch import nn


class Linear(nn.Module):
    """logits = [0, w . x + b]: gradients known in closed form."""

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.reshape(1, 784).clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w.t() + self.b
        return torch.cat([torch.zeros_like(z), z], 1)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 2))


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        raise RuntimeError("backward called on a query-only model")


class NoBackward(nn.Module):
    """Wraps a model so that any backward pass through it raises."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NoBackward.apply(self.net(_NoBackward.apply(x)))
