"""Plain ``nn.Module`` networks: the member CNN and the stacker MLP.

Nothing here knows about Lightning, Hydra or preprocessing.
"""

from __future__ import annotations

import torch
from torch import nn

from advdefense.checks import ConfigError, check_choice


class SmallCNN(nn.Module):
    """Two convolutional layers with max-pooling and a small fully connected head.

    The paper's base model ("two convolutional layers with max-pooling"), sized so that one
    epoch over the ~10k training images takes seconds on two CPU cores.

    Shape:
        input (N, in_channels, 28, 28) float in [0, 1]; output (N, num_classes) logits,
        index 0 = digit 6, index 1 = digit 7.

    Args:
        channels: output channels of the two 5x5 convolutions.
        hidden: width of the hidden fully connected layer.
        num_classes: number of logits.
        dropout: dropout probability before the last layer.
        in_channels: input channels (2 for a randomized-ablation base net: values + mask).
    """

    def __init__(self, channels: tuple[int, int] | list[int] = (16, 32), hidden: int = 128,
                 num_classes: int = 2, dropout: float = 0.0, in_channels: int = 1) -> None:
        super().__init__()
        if len(channels) != 2 or any(int(c) < 1 for c in channels):
            raise ConfigError("model.net.channels", list(channels), "two positive integers")
        if int(hidden) < 1:
            raise ConfigError("model.net.hidden", hidden, "a positive integer")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError("model.net.dropout", dropout, "a number in [0, 1)")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ConfigError("model.net.in_channels", in_channels, "a positive integer")
        c1, c2 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 7 * 7, int(hidden)), nn.ReLU(inplace=True),
            nn.Dropout(float(dropout)), nn.Linear(int(hidden), int(num_classes)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class StackerMLP(nn.Module):
    """MLP over concatenated member logits (the paper's integrated model).

    Shape:
        input (N, in_features) float logits; output (N, num_classes) logits.

    Args:
        in_features: number of input features (2 x number of members).
        hidden: widths of the hidden layers (the paper: two layers of 256).
        activation: ``relu``, ``tanh`` or ``gelu``, or ``linear`` for no nonlinearity
            (what the paper's authors' code did: a linear model in effect).
        num_classes: number of outputs.
        skip: ``none``, or ``mean``: add the mean of the member logits to the MLP's output and
            start the MLP's last layer at zero, so the untrained stacker is the logit mean and
            training learns a correction to it (input then (N, M x num_classes)).
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...] | list[int] = (256, 256),
                 activation: str = "relu", num_classes: int = 2, skip: str = "none") -> None:
        super().__init__()
        check_choice("model.stacker.activation", activation, [*_ACTIVATIONS, "linear"])
        check_choice("model.skip", skip, ["none", "mean"])
        if int(in_features) < 1:
            raise ConfigError("model.stacker.in_features", in_features, "a positive integer")
        if skip == "mean" and int(in_features) % int(num_classes):
            raise ConfigError("model.stacker.in_features", in_features,
                              f"a multiple of num_classes={num_classes} for skip=mean")
        self.skip, self.num_classes = skip, int(num_classes)
        layers: list[nn.Module] = []
        width = int(in_features)
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            if activation != "linear":
                layers.append(_ACTIVATIONS[activation]())
            width = int(h)
        layers.append(nn.Linear(width, int(num_classes)))
        if skip == "mean":
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.mlp(features)
        if self.skip == "mean":
            out = out + features.unflatten(1, (-1, self.num_classes)).mean(1)
        return out
