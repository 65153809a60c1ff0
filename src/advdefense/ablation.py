"""Randomized ablation (Levine & Feizi, AAAI 2020): a classifier that sees a random few pixels.

Each forward keeps a uniformly random subset of ``keep`` of the 784 pixels and hides the rest;
the network sees two channels: the kept pixels' values (0 elsewhere) and a mask that is 1 on
kept pixels, so an ablated pixel is never confused with a black one. Trained on such inputs, the
smoothed classifier predicts by majority over many ablations, and an L0 attack that changes
``rho`` pixels can only touch the ablations that happen to keep one of them: at most a share
``Delta(rho) = 1 - C(d - rho, k) / C(d, k)`` of them, which is what :mod:`advdefense.certify`
turns into a certified L0 radius.

Paper: Levine & Feizi, "Robustness Certificates for Sparse Adversarial Attacks by Randomized
Ablation", AAAI 2020, https://arxiv.org/abs/1911.09272

Convention:
    pixels are indexed row-major, 0..H*W-1; ``keep`` is a count of pixels (not a fraction).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advdefense.checks import ConfigError, check_choice, check_images


def sample_subsets(n: int, keep: int, d: int = 784, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` independent uniformly random ``keep``-subsets of ``range(d)`` (Floyd's algorithm).

    Exact uniform subsets in ``keep`` vectorized steps (no sort over the ``d`` pixels): step
    ``j`` draws ``t`` in ``[0, j]`` and takes ``t``, or ``j`` when ``t`` was already taken.

    Returns:
        (n, keep) int64 pixel indices in [0, d), distinct within each row (in no useful order).
    """
    if not 1 <= keep <= d:
        raise ConfigError("keep", keep, f"an integer in [1, {d}] (pixels kept per ablation)")
    taken = torch.zeros(n, d, dtype=torch.bool, device=device)
    out = torch.empty(n, keep, dtype=torch.long, device=device)
    for step, j in enumerate(range(d - keep, d)):
        t = torch.randint(0, j + 1, (n, 1), device=device, generator=generator)
        hit = taken.gather(1, t)
        choice = torch.where(hit, torch.full_like(t, j), t)
        taken.scatter_(1, choice, True)
        out[:, step] = choice[:, 0]
    return out


def encode(images: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
    """The two-channel ablated input for given kept pixels.

    Args:
        images: (N, 1, H, W) float in [0, 1].
        subsets: (N, keep) int64 pixel indices (row-major) to keep, one row per image.

    Returns:
        (N, 2, H, W): channel 0 the kept pixels' values (0 elsewhere), channel 1 the mask (1 on
        kept pixels, 0 elsewhere). Differentiable with respect to the kept pixels' values.
    """
    n, _, h, w = images.shape
    mask = torch.zeros(n, h * w, dtype=images.dtype, device=images.device)
    mask.scatter_(1, subsets, 1.0)
    mask = mask.view(n, 1, h, w)
    return torch.cat([images * mask, mask], dim=1)


def ablate(images: torch.Tensor, keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep a fresh uniformly random ``keep``-pixel subset of each image (see :func:`encode`).

    Args:
        images: (N, 1, H, W) float in [0, 1].
        keep: pixels kept per image, in [1, H * W].
        generator: optional torch.Generator on the images' device, for reproducible subsets.

    Returns:
        (N, 2, H, W) float: kept values and kept mask.
    """
    n, _, h, w = images.shape
    return encode(images, sample_subsets(n, keep, h * w, images.device, generator))


class RandomAblation(nn.Module):
    """Module form of :func:`ablate`: (N, 1, H, W) in [0, 1] -> (N, 2, H, W), fresh subsets per call.

    Args:
        keep: pixels kept per image.
        seed: if given, subsets come from a private generator seeded once (a reproducible
            sequence of draws); if None, from torch's global generator.
    """

    def __init__(self, keep: int = 45, seed: int | None = None) -> None:
        super().__init__()
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= 784:
            raise ConfigError("model.net.keep", keep, "an integer in [1, 784] (pixels kept)")
        self.keep, self.seed = keep, seed
        self._generator: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device).manual_seed(int(self.seed))
        return self._generator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ablate(images, self.keep, self.generator(images.device))

    def extra_repr(self) -> str:
        return f"keep={self.keep}, seed={self.seed}"


class AblationMLP(nn.Module):
    """An MLP over the two-channel ablated encoding, with a fast path over the kept pixels.

    The first layer is ``values @ V + mask @ M + b`` over the flattened channels (a
    ``Linear(2 * H * W, hidden[0])`` stored as two (H * W, hidden[0]) tables); the sparse
    forward :meth:`forward_subsets` computes the same layer as a sum of ``keep`` table rows
    (``embedding_bag``), which is what makes certification with 10,000 ablations per image
    affordable on a CPU.

    Shape:
        input (N, 2, H, W) with H * W = ``pixels``; output (N, num_classes) logits.

    Args:
        hidden: widths of the hidden layers (ReLU after each).
        num_classes: number of logits.
        pixels: H * W of the images (784 for MNIST).
    """

    def __init__(self, hidden: tuple[int, ...] | list[int] = (256, 128), num_classes: int = 2,
                 pixels: int = 784) -> None:
        super().__init__()
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ConfigError("model.net.base.hidden", list(hidden),
                              "a non-empty list of positive widths")
        self.pixels, width = int(pixels), int(hidden[0])
        bound = 1.0 / math.sqrt(2 * self.pixels)  # nn.Linear's default for fan_in = 2 * pixels
        self.value_table = nn.Parameter(torch.empty(self.pixels, width).uniform_(-bound, bound))
        self.mask_table = nn.Parameter(torch.empty(self.pixels, width).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(width).uniform_(-bound, bound))
        layers: list[nn.Module] = [nn.ReLU()]
        for h in hidden[1:]:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, int(num_classes)))
        self.rest = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)  # (N, 2, pixels)
        return self.rest(x[:, 0] @ self.value_table + x[:, 1] @ self.mask_table + self.bias)

    def forward_subsets(self, values: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
        """Logits of the ablated inputs given by their kept pixels only (equal to
        :meth:`forward` of :func:`encode`'s output, up to float rounding).

        Args:
            values: (B, keep) the kept pixels' values.
            subsets: (B, keep) int64 their indices in [0, pixels).
        """
        bag = nn.functional.embedding_bag
        h = bag(subsets, self.value_table, mode="sum", per_sample_weights=values)
        return self.rest(h + bag(subsets, self.mask_table, mode="sum") + self.bias)


_OUTPUTS = ("log_mean_softmax", "mean_logits")


class AblatedClassifier(nn.Module):
    """A randomized-ablation classifier: ``base(ablate(x))``, smoothed over samples in eval mode.

    Training mode: one fresh ablation per image (the base net learns from ablated inputs).
    Eval mode: the expectation over the randomness (EOT) from ``n_eval`` ablations per image,
    as ``log(mean softmax)`` (default; its argmax is the soft vote) or the mean of the logits.
    Both are differentiable, so white-box attacks on this forward are EOT attacks with
    ``n_eval`` samples per gradient. Certified predictions use hard votes over many more
    samples: :func:`advdefense.certify.certify`.

    Shape:
        input (N, 1, 28, 28) float in [0, 1]; output (N, num_classes) logits.

    Args:
        base: network mapping (N, 2, 28, 28) ablated inputs to (N, num_classes) logits.
        keep: pixels kept per ablation (Levine & Feizi used 45 for MNIST).
        n_eval: ablations per image in eval mode.
        output: ``log_mean_softmax`` or ``mean_logits`` (how the eval samples are combined).
        seed: seed of a private generator for the subsets, or None for torch's global one.
    """

    def __init__(self, base: nn.Module, keep: int = 45, n_eval: int = 16,
                 output: str = "log_mean_softmax", seed: int | None = None) -> None:
        super().__init__()
        check_choice("model.net.output", output, _OUTPUTS)
        if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 1:
            raise ConfigError("model.net.n_eval", n_eval, "a positive integer (samples per image)")
        self.base = base
        self.ablation = RandomAblation(keep, seed)
        self.keep, self.n_eval, self.output = keep, n_eval, output

    def ablated_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C) logits of one fresh ablation per image; differentiable in the kept pixels.

        Uses the base net's ``forward_subsets`` fast path when it has one (same values as the
        dense two-channel encoding), else ``base(encode(...))``.
        """
        n, _, h, w = images.shape
        generator = self.ablation.generator(images.device)
        subsets = sample_subsets(n, self.keep, h * w, images.device, generator)
        if hasattr(self.base, "forward_subsets"):
            return self.base.forward_subsets(images.reshape(n, h * w).gather(1, subsets), subsets)
        return self.base(encode(images, subsets))

    def sample_logits(self, images: torch.Tensor, samples: int) -> torch.Tensor:
        """(samples, N, C) logits of ``samples`` independent ablations of each image."""
        return self.ablated_logits(images.repeat(samples, 1, 1, 1)).view(samples, len(images), -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.ablated_logits(images)
        logits = self.sample_logits(images, self.n_eval)
        if self.output == "mean_logits":
            return logits.mean(0)
        return torch.logsumexp(logits.log_softmax(-1), dim=0) - math.log(self.n_eval)

    @torch.inference_mode()
    def count_votes(self, images: torch.Tensor, samples: int, batch_size: int = 16384,
                    num_classes: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        """Hard votes of ``samples`` independent uniform ablations per image.

        Ablations are drawn ``chunk = min(samples, batch_size)`` at a time and each chunk is
        shared by every image: each image's own samples are still independent and uniform,
        which is all a per-image confidence bound needs, and drawing costs 1/N as much.

        Args:
            images: (N, 1, H, W) float in [0, 1].
            samples: ablations per image.
            batch_size: ablated inputs per forward of the base net.
            num_classes: number of logits of the base net.
            generator: optional generator for the subsets (else the module's own or global).

        Returns:
            (N, num_classes) int64 counts; each row sums to ``samples``.
        """
        check_images(images, channels=None, size=None)
        n, _, h, w = images.shape
        generator = generator if generator is not None else self.ablation.generator(images.device)
        flat = images.reshape(n, h * w)
        counts = torch.zeros(n, num_classes, dtype=torch.long, device=images.device)
        chunk = max(1, min(samples, batch_size))
        group = max(1, batch_size // chunk)
        for done in range(0, samples, chunk):
            s = min(chunk, samples - done)
            subsets = sample_subsets(s, self.keep, h * w, images.device, generator)
            for i in range(0, n, group):
                block = flat[i:i + group]
                g = len(block)
                idx = subsets.repeat(g, 1)  # (g * s, keep): image-major
                if hasattr(self.base, "forward_subsets"):
                    values = block[:, subsets].reshape(g * s, -1)
                    logits = self.base.forward_subsets(values, idx)
                else:
                    logits = self.base(encode(images[i:i + g].repeat_interleave(s, 0), idx))
                votes = nn.functional.one_hot(logits.argmax(1), num_classes).view(g, s, -1)
                counts[i:i + g] += votes.sum(1)
        return counts

    def extra_repr(self) -> str:
        return f"keep={self.keep}, n_eval={self.n_eval}, output={self.output!r}"


def find_ablated(model: nn.Module) -> AblatedClassifier | None:
    """The :class:`AblatedClassifier` inside a (registry) model, or None if it has none."""
    for module in model.modules():
        if isinstance(module, AblatedClassifier):
            return module
    return None
