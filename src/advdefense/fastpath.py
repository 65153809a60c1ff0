"""A faster, equivalent copy of a model for attacks: :func:`optimize`.

Every attack here is bound by the model's forward (and input-gradient) pass. :func:`optimize`
returns a copy of a member, an ensemble or a registry model that computes the same logits and
the same input gradients (up to float rounding), faster on the CPU:

* **Members run in chunks** of ``chunk`` images (default 256): a 1,024-image batch of the
  wide SmallCNN has 100 MB of first-layer activations, which no cache holds; chunks keep the
  activations of one chunk in the L2/L3 caches for the next layer, and autograd runs the
  backward pass chunk by chunk as well (its nodes run in reverse creation order). Each image's
  result does not depend on the others, so chunking changes no value. One intra-op thread
  only: on two, chunks made both passes slower (0.6-0.8x on the shared 2-core machine).
* **Max-pooling before the ReLU** in the SmallCNN: ``maxpool(relu(x)) == relu(maxpool(x))``
  exactly (the ReLU is monotone), with the same input gradient (the pooling routes the gradient
  to the first maximum in both orders; where that maximum is <= 0 the ReLU zeroes it in both),
  and the ReLU then touches a quarter of the values.
* **The binarizing squeeze without the median** when no gradient is needed: with ``bits=1``
  the squeezed pixel is ``round(median) = 1`` iff the median exceeds 0.5 (``round(0.5) = 0``),
  i.e. iff more than half of the window's pixels exceed 0.5: a box sum of a binary image, the
  same reflect padding as the median (exact). With a gradient (attacks), the median of shifted
  views (:func:`median3`: the same element as Kornia's, ties included), then the module's own
  rounding, so its surrogate gradients (:func:`advdefense.preprocess.squeeze_gradient`) are
  honoured; a window-mean median gradient takes the module's own path.
* **The first convolution's input gradient** (one input channel) as one matrix product and a
  ``fold`` (:class:`_FirstConv`), 3-6x faster than the generic convolution backward.
* **Frozen parameters**: attacks need input gradients only.

Off the CPU (CUDA), :class:`FastMember` runs the plain pipeline: these means were measured on
the CPU only. The module types the evaluation dispatches on stay the same (an ensemble is still a
``MajorityVote``/``StackedLogits``..., its squeezes still ``FeatureSqueeze`` modules): only the
member pipelines (``nn.Sequential(preprocess=..., net=SmallCNN)``) become :class:`FastMember`,
a ``nn.Sequential`` subclass with the same children.

Measured in ``benchmarks/bench_forward.py`` (``benchmarks/README.md``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from advdefense.nets import SmallCNN
from advdefense.preprocess import FeatureSqueeze, quantize

DEFAULT_CHUNK = 256


def _is_smallcnn(net: nn.Module) -> bool:
    """``net`` is a SmallCNN with the layer layout :class:`FastMember` relies on."""
    if type(net) is not SmallCNN or len(net.features) != 6 or len(net.head) != 5:
        return False
    kinds = [type(m) for m in net.features]
    return kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.MaxPool2d]


def binary_squeeze(images: torch.Tensor, window: int) -> torch.Tensor:
    """The value of ``feature_squeeze(images, window, bits=1)`` without the median.

    ``round(median(w)) == 1`` iff more than half of the ``window**2`` pixels of ``w`` exceed
    0.5; counted with reflect padding, as Kornia's median filter pads.

    Args:
        images: (N, C, H, W) float in [0, 1], H and W > window // 2.
        window: odd median window in pixels, >= 3.

    Returns:
        (N, C, H, W) float in {0, 1}, ``images``' dtype.
    """
    r = window // 2
    above = F.pad(images, (r, r, r, r), mode="reflect").gt(0.5).to(images.dtype)
    h, w = images.shape[-2:]
    rows = above[..., :h, :]
    for dy in range(1, window):
        rows = rows + above[..., dy:dy + h, :]
    count = rows[..., :w]
    for dx in range(1, window):
        count = count + rows[..., dx:dx + w]
    return count.gt(window * window // 2).to(images.dtype)


def median3(images: torch.Tensor, window: int) -> torch.Tensor:
    """Kornia's ``median_blur(images, (window, window))`` (reflect padding), values and gradient.

    The same ``window**2`` neighbours in the same order (row-major) go to the same
    ``torch.median``, so the same element is picked, ties included, and the gradient reaches
    the same pixel; the neighbours are shifted views of the padded image instead of the output
    of a convolution with one-hot kernels, and the non-finite check is skipped (images are in
    [0, 1]).

    Args:
        images: (N, C, H, W) float in [0, 1]; window: odd, >= 3.

    Returns:
        (N, C, H, W), differentiable.
    """
    r = window // 2
    padded = F.pad(images, (r, r, r, r), mode="reflect")
    h, w = images.shape[-2:]
    # the neighbours along the last, contiguous dim: torch.median copies any other dim there
    stack = torch.stack([padded[..., dy:dy + h, dx:dx + w]
                         for dy in range(window) for dx in range(window)], dim=-1)
    return stack.median(dim=-1).values


class _FirstConv(torch.autograd.Function):
    """A one-input-channel convolution (stride 1, 'same' padding, frozen weights) whose input
    gradient is one matrix product and a ``fold`` (col2im): 3-6x faster on the CPU than the
    generic convolution backward for 16-32 output channels and one input channel."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, weight: torch.Tensor,  # noqa: ANN001
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.size = images.shape[-2:]
        return F.conv2d(images, weight, bias, padding=weight.shape[-1] // 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        (weight,) = ctx.saved_tensors
        c, k = weight.shape[0], weight.shape[-1]
        cols = torch.matmul(weight.reshape(c, k * k).t(), grad.reshape(len(grad), c, -1))
        return F.fold(cols, tuple(ctx.size), k, padding=k // 2), None, None


def _first_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, with :class:`_FirstConv`'s backward where it applies."""
    k = conv.kernel_size[0]
    if (torch.is_grad_enabled() and x.requires_grad and not conv.weight.requires_grad
            and conv.in_channels == 1 and conv.groups == 1 and conv.kernel_size == (k, k)
            and k % 2 == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.padding == (k // 2, k // 2) and conv.padding_mode == "zeros"
            and (conv.bias is None or not conv.bias.requires_grad)):
        return _FirstConv.apply(x, conv.weight, conv.bias)
    return conv(x)


class FastMember(nn.Sequential):
    """A member pipeline ``preprocess -> SmallCNN`` with the same values, computed faster.

    Same children as the pipeline it replaces (``preprocess``, ``net``), so
    ``squeeze_gradient`` and the like still find and switch its feature squeeze.

    Shape: images (N, 1, 28, 28) in [0, 1] -> (N, num_classes) logits.

    Args:
        pipeline: ``nn.Sequential(preprocess=..., net=SmallCNN)`` (shared, not copied).
        chunk: images per chunk, >= 1.
    """

    def __init__(self, pipeline: nn.Sequential, chunk: int = DEFAULT_CHUNK) -> None:
        super().__init__(OrderedDict(pipeline.named_children()))
        if not _is_smallcnn(self.net):
            raise TypeError(f"FastMember needs a SmallCNN net, got {type(self.net).__name__}")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = int(chunk)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.device.type != "cpu":  # measured on the CPU only: elsewhere the plain path
            return super().forward(images)
        if len(images) <= self.chunk or torch.get_num_threads() > 1:
            # on 2 threads chunks were slower (0.6-0.8x, shared 2-core machine)
            return self._forward(images)
        return torch.cat([self._forward(part) for part in images.split(self.chunk)])

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        pre = self.preprocess
        if not (isinstance(pre, FeatureSqueeze) and pre.window > 1
                and pre.median_gradient == "exact"):
            return pre(images)
        if pre.bits == 1 and not (torch.is_grad_enabled() and images.requires_grad):
            return binary_squeeze(images, pre.window)
        out = median3(images, pre.window)
        return out if pre.bits is None else quantize(out, pre.bits, pre.straight_through,
                                                     pre.temperature)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.net.features
        x = self._preprocess(images)
        x = f[2](_first_conv(f[0], x)).relu_()  # conv, pool, relu: pooling first, same values and gradients
        x = f[5](f[3](x)).relu_()
        return self.net.head(x)


def optimize(model: nn.Module, chunk: int = DEFAULT_CHUNK) -> nn.Module:
    """A frozen, eval-mode copy of ``model`` with every member pipeline made a :class:`FastMember`.

    ``model`` may be a member pipeline, an ensemble, or anything holding them (a registry
    ``CheckedModel``); it is not modified. Modules other than ``preprocess -> SmallCNN``
    pipelines (an ablation member, the stacker head) are kept as they are.

    Args:
        model: maps images (N, 1, 28, 28) in [0, 1] to (N, 2) logits.
        chunk: images per member chunk (see the module docstring).

    Returns:
        The copy: same logits and input gradients up to float rounding.
    """
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    if _replaceable(fast):
        return FastMember(fast, chunk)
    _replace_members(fast, chunk)
    return fast


def _replaceable(module: nn.Module) -> bool:
    return (type(module) is nn.Sequential and set(dict(module.named_children())) == {"preprocess", "net"}
            and _is_smallcnn(module.net))


def _replace_members(module: nn.Module, chunk: int) -> None:
    for name, child in module.named_children():
        if _replaceable(child):
            setattr(module, name, FastMember(child, chunk))
        else:
            _replace_members(child, chunk)
