"""Deployed models assembled from the plain modules (no Lightning, no Hydra, no files).

* :func:`member_pipeline`: one member, ``Sequential(preprocess, net)``.
* :class:`CheckedModel`: any model behind input checks, as :func:`advdefense.registry.load_model`
  returns it.

Both map images (N, 1, 28, 28) float in [0, 1] to (N, 2) logits (index 0 = digit 6, 1 = digit 7).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from advdefense.checks import check_images


def member_pipeline(preprocess: nn.Module, net: nn.Module) -> nn.Sequential:
    """The deployed member: (N, 1, 28, 28) in [0, 1] -> preprocess -> net -> (N, 2) logits."""
    return nn.Sequential(OrderedDict(preprocess=preprocess, net=net))


class CheckedModel(nn.Module):
    """A loaded registry model with input checks: (N, 1, 28, 28) float in [0, 1] -> (N, 2) logits.

    Index 0 of the logits is digit 6, index 1 is digit 7. Raises ``ImageError`` on inputs of the
    wrong shape, dtype or range, so a caller feeding 0-255 or normalized pixels learns at once.
    ``model`` is the bare module, ``spec`` the plain spec it was built from (None if unknown).
    """

    def __init__(self, model: nn.Module, name: str = "", kind: str = "member",
                 spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model, self.name, self.kind, self.spec = model, name, kind, spec

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2) for images (N, 1, 28, 28) in [0, 1] of any floating dtype.

        float64 / float16 / bfloat16 images are converted to the weights' dtype (differentiably,
        so gradients reach the caller's tensor in its own dtype); integer images are refused.
        """
        check_images(images)
        weight = next(self.model.parameters(), None)
        if weight is not None and images.dtype != weight.dtype:
            images = images.to(weight.dtype)
        return self.model(images)
