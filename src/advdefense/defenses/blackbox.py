"""Black-box-augmented training: learn from the query-only local-search attack's examples.

Local search (Narodytska & Kasiviswanathan 2017) costs hundreds of forward queries per image,
far more than an FGSM step. To keep a black-box member's training within a small multiple of an
FGSM member's, each step attacks only ``attack_per_step`` images of the batch against the
current model, stores the results in a pool of recent adversarial examples, and trains on the
clean batch plus ``pool_per_step`` examples drawn from the pool. The pool is the defense's own
state (a ring buffer on the model's device), seeded from the global step, not from global RNG.
"""

from __future__ import annotations

import torch
from torch import nn

from advdefense.checks import ConfigError
from advdefense.defenses.base import TrainingDefense


class BlackBoxAugmentation(TrainingDefense):
    """Clean batch + a replayed pool of local-search adversarial examples.

    Args:
        attack: a query-only attack, ``attack(model, images, labels) -> images``.
        attack_per_step: images of each batch attacked every ``attack_every`` steps.
        attack_every: attack on every k-th step (1 = every step).
        pool_size: capacity of the ring buffer of adversarial examples.
        pool_per_step: pool examples appended to each training batch.
        successful_only: keep only examples that fooled the model when crafted (failed
            attempts are near-clean images that teach little).
    """

    name = "blackbox"

    def __init__(self, attack, attack_per_step: int = 8, attack_every: int = 1,
                 pool_size: int = 2048, pool_per_step: int = 64, successful_only: bool = False) -> None:
        for key, value in {"attack_per_step": attack_per_step, "attack_every": attack_every,
                           "pool_size": pool_size}.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"defense.{key}", value, "a positive integer")
        if not isinstance(pool_per_step, int) or pool_per_step < 0:
            raise ConfigError("defense.pool_per_step", pool_per_step, "an integer >= 0")
        self.attack, self.attack_per_step, self.attack_every = attack, attack_per_step, attack_every
        self.pool_size, self.pool_per_step = pool_size, pool_per_step
        self.successful_only = successful_only
        self.pool_x: torch.Tensor | None = None
        self.pool_y: torch.Tensor | None = None
        self.filled, self.cursor = 0, 0

    def _add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.pool_x is None or self.pool_x.device != x.device:
            self.pool_x = torch.zeros((self.pool_size, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.pool_y = torch.zeros(self.pool_size, dtype=y.dtype, device=y.device)
            self.filled = self.cursor = 0
        idx = (self.cursor + torch.arange(x.shape[0], device=x.device)) % self.pool_size
        self.pool_x[idx], self.pool_y[idx] = x, y
        self.cursor = int((self.cursor + x.shape[0]) % self.pool_size)
        self.filled = min(self.pool_size, self.filled + x.shape[0])

    def validation_images(self, model: nn.Module, images: torch.Tensor,
                          labels: torch.Tensor) -> torch.Tensor | None:
        """None: a local search on every validation image each epoch would cost more than the
        training it selects among; black-box members are selected on clean accuracy."""
        return None

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        if step % self.attack_every == 0:
            k = min(self.attack_per_step, images.shape[0])
            result = self.attack.run(model, images[:k], labels[:k])
            keep = result.success if self.successful_only else torch.ones_like(result.success)
            if keep.any():
                self._add(result.images[keep].detach(), labels[:k][keep])
        if self.filled == 0 or self.pool_per_step == 0:
            return images, labels
        g = torch.Generator(device="cpu").manual_seed(step)
        pick = torch.randint(self.filled, (min(self.pool_per_step, self.filled),), generator=g)
        pick = pick.to(images.device)
        return torch.cat([images, self.pool_x[pick]]), torch.cat([labels, self.pool_y[pick]])
