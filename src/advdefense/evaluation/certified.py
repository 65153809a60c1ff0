"""Certified L0 accuracy of the evaluated randomized-ablation models (``certified.json``).

Runs :func:`advdefense.certify.certify` on every evaluated model that contains an
:class:`advdefense.ablation.AblatedClassifier` (others are skipped) and records, per model, the
certified accuracy at each radius. These are guarantees (each image's certificate holds with
probability >= 1 - alpha), kept apart from the empirical attack rows of ``results.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advdefense.certify import ablated_parts, certify
from advdefense.evaluation.cache import CellCache, cell_key, code_version, data_digest
from advdefense.evaluation.threats import EvalModel
from advdefense.io import atomic_write_text
from advdefense.sampling import stratified_sample

FILE = "certified.json"


@dataclass
class CertifyConfig:
    """``eval.certify``: samples, confidence, radii reported, and images certified."""

    n0: int = 100            # selection samples per image
    n: int = 10_000          # estimation samples per image
    alpha: float = 0.001     # each certificate fails with probability <= alpha
    batch_size: int = 16384  # ablated inputs per forward
    max_radius: int = 30     # certified accuracy reported at radius 0..max_radius
    images: int | None = None  # a stratified subset of the evaluated images; None = all


def certify_models(models: Sequence[EvalModel], images: torch.Tensor, labels: torch.Tensor,
                   config: CertifyConfig, cache: CellCache | None = None, seed: int = 0,
                   progress: bool = True) -> list[dict[str, Any]]:
    """Certify every ablation model among ``models``; one record per model.

    Args:
        models: evaluated models (those without ablation are skipped).
        images: (N, 1, 28, 28) float in [0, 1]; labels: (N,) in {0, 1}.
        config: samples, alpha, radii and the image subset.
        cache: records keyed by model file hash, settings and images (None = no cache).
        seed: seeds the image subset and the ablations (reproducible certificates).

    Returns:
        records ``{"model", "keep", "n_images", "n0", "n", "alpha", "radii",
        "certified_accuracy", "abstain", "smoothed_accuracy", "median_radius", "seconds"}``.
    """
    idx = stratified_sample(labels, config.images, seed)
    x, y = images[idx], labels[idx]
    out = []
    for m in models:
        if ablated_parts(m.module) is None:
            continue
        key = cell_key({"certify": m.digest, "cfg": config.__dict__, "seed": seed,
                        "data": data_digest(x, y), "v": code_version()})
        record = cache.get(key) if cache is not None else None
        if record is None:
            start = time.perf_counter()
            gen = torch.Generator(x.device).manual_seed(seed)
            cert = certify(m.module, x, y, config.n0, config.n, config.alpha, config.batch_size,
                           gen)
            radii = list(range(0, config.max_radius + 1))
            ok = cert.radius[cert.correct]
            record = {"model": m.name, "keep": cert.keep, "n_images": len(y), "n0": config.n0,
                      "n": config.n, "alpha": config.alpha, "radii": radii,
                      "certified_accuracy": cert.accuracy_at(radii),
                      "abstain": float((cert.radius < 0).float().mean()),
                      "smoothed_accuracy": float(cert.correct.float().mean()),
                      "median_radius": _median_radius(cert.radius, cert.correct),
                      "max_radius_correct": int(ok.max()) if len(ok) else -1,
                      "seconds": round(time.perf_counter() - start, 2)}
            if cache is not None:
                cache.put(key, record)
        if progress:
            at = dict(zip(record["radii"], record["certified_accuracy"], strict=True))
            print(f"certified {m.name}: n={record['n_images']}, radius 8: {at.get(8, float('nan')):.3f}, "
                  f"16: {at.get(16, float('nan')):.3f} ({record['seconds']} s)", flush=True)
        out.append(record | {"model": m.name})  # keyed by the weights: this name
    return out


def _median_radius(radius: torch.Tensor, correct: torch.Tensor) -> float:
    """Median certified radius over all images, with wrong or abstained ones at -1."""
    if len(radius) == 0:
        return -1.0
    r = torch.where(correct, radius, torch.full_like(radius, -1))
    return float(r.double().median())


def write_certified(out_dir: str | Path, records: list[dict[str, Any]]) -> Path:
    path = Path(out_dir) / FILE
    atomic_write_text(path, json.dumps(records, indent=1))
    return path
