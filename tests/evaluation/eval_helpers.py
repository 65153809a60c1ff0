"""Tiny models and attacks for the evaluation tests (fast, deterministic)."""

from __future__ import annotations

import torch
from torch import nn

from advdefense.attacks.base import AttackResult


def linear_model(seed: int = 0) -> nn.Module:
    """(N, 1, 28, 28) -> (N, 2): a fixed random linear classifier."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2)).eval()


class Round(nn.Module):
    """A gradient-masking front end: rounds pixels, zero gradient, no straight-through flag."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)


class CountingAttack:
    """Signed-gradient step of size eps that counts how often it is called."""

    def __init__(self, eps: float = 0.3) -> None:
        self.eps, self.calls = eps, 0

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        self.calls += 1
        x = images.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(x), labels)
            (g,) = torch.autograd.grad(loss, x)
        adv = (images + self.eps * g.sign()).clamp(0, 1)
        success = model(adv).argmax(1) != labels
        return AttackResult(adv, success, torch.ones(len(images), dtype=torch.long))

    def __call__(self, model, images, labels):
        return self.run(model, images, labels).images


def data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 2


class RandomQueryAttack:
    """Query-only: per example, the first of ``tries`` uniform-noise images that fools the model."""

    def __init__(self, tries: int = 30, seed: int = 0) -> None:
        self.tries, self.seed = tries, seed

    @torch.no_grad()
    def __call__(self, model, images, labels):
        g = torch.Generator().manual_seed(self.seed)
        adv = images.clone()
        done = torch.zeros(len(images), dtype=torch.bool)
        for _ in range(self.tries):
            cand = torch.rand(images.shape, generator=g)
            fooled = (model(cand).argmax(1) != labels) & ~done
            adv[fooled], done = cand[fooled], done | fooled
        return adv


def run_eval(models, specs, images, labels, threats, surrogate, cache, out_dir, sweep=None,
             sanity=None, attack_n=None, progress=False, seed=0, meta=None, full_n=None):
    """``evaluate_models`` with the settings spelled out as arguments (quiet by default)."""
    from advdefense.evaluation.pipeline import evaluate_models
    from advdefense.evaluation.settings import EvalSettings, SanityConfig

    settings = EvalSettings(out_dir, cache, list(threats), surrogate, sweep,
                            sanity or SanityConfig(), dict(attack_n or {}), seed, progress,
                            dict(meta or {}), full_n)
    return evaluate_models(models, specs, images, labels, settings)
