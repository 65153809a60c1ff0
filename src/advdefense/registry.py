"""The model registry: every trained model is one self-contained file, ``<models_dir>/<name>.ckpt``.

A registry file is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading never unpickles arbitrary objects:

    {"format": "advdefense-model", "version": 1, "kind": "member" | "ensemble",
     "name": str, "spec": {...plain config...}, "state_dict": {...tensors...},
     "metrics": {...floats...}, "config": {...the resolved run config, for humans...}}

The model is rebuilt from ``spec`` with Hydra's ``instantiate``, restricted to classes of this
package, then its weights are loaded strictly. A resolved YAML config is written beside it.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advdefense.checks import check_images

FORMAT, VERSION = "advdefense-model", 1
SUFFIX = ".ckpt"


class RegistryError(RuntimeError):
    """A registry file is missing, corrupt, foreign or does not match its architecture."""


class CheckedModel(nn.Module):
    """A loaded registry model with input checks: (N, 1, 28, 28) float in [0, 1] -> (N, 2) logits.

    Index 0 of the logits is digit 6, index 1 is digit 7. Raises ``ImageError`` on inputs of the
    wrong shape, dtype or range, so a caller feeding 0-255 or normalized pixels learns at once.
    """

    def __init__(self, model: nn.Module, name: str = "", kind: str = "member") -> None:
        super().__init__()
        self.model, self.name, self.kind = model, name, kind

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return self.model(images)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _check_targets(spec: Any, where: str = "spec") -> None:
    """Only this package's classes may be instantiated from a registry file."""
    if isinstance(spec, dict):
        target = spec.get("_target_")
        if target is not None and not str(target).startswith("advdefense."):
            raise RegistryError(f"{where}._target_={target!r} is not an advdefense class; "
                                "refusing to instantiate it from a model file")
        for k, v in spec.items():
            _check_targets(v, f"{where}.{k}")
    elif isinstance(spec, list):
        for i, v in enumerate(spec):
            _check_targets(v, f"{where}[{i}]")


def build_from_spec(kind: str, spec: dict[str, Any]) -> nn.Module:
    """Rebuild an untrained model from its plain ``spec`` (see :func:`member_spec`)."""
    from hydra.utils import instantiate

    _check_targets(spec)
    if kind == "member":
        from advdefense.lit.classifier import member_pipeline

        return member_pipeline(instantiate(spec["preprocess"]), instantiate(spec["net"]))
    if kind == "ensemble":
        from advdefense.ensembles import build_ensemble

        members = {n: build_from_spec("member", s) for n, s in spec["members"].items()}
        head = instantiate(spec["head"]) if spec.get("head") else None
        return build_ensemble(spec["combine"], members, head)
    raise RegistryError(f"unknown model kind {kind!r}; expected 'member' or 'ensemble'")


def save_model(path: str | Path, model: nn.Module, kind: str, name: str, spec: dict[str, Any],
               metrics: dict[str, float] | None = None, config: dict[str, Any] | None = None) -> Path:
    """Save ``model`` (built by ``build_from_spec(kind, spec)``) atomically; returns the path."""
    path = Path(path)
    build_from_spec(kind, spec).load_state_dict(model.state_dict())  # fail now, not at load time
    payload = {
        "format": FORMAT, "version": VERSION, "kind": kind, "name": name, "spec": spec,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "config": config or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_entry(path: str | Path) -> dict[str, Any]:
    """Read and validate a registry file without building the model."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"no model file at {path}; train it first (see README: 'python train.py')")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle of foreign objects, random bytes...
        raise RegistryError(
            f"{path} is not a readable advdefense model file ({type(exc).__name__}: "
            f"{(str(exc).splitlines() or ['empty file'])[0][:200]}); it may be truncated or "
            "corrupt: retrain it") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RegistryError(f"{path} is not an advdefense model file (no '{FORMAT}' header); "
                            "Lightning training checkpoints are not registry entries: use models/<name>.ckpt")
    if payload.get("version") != VERSION:
        raise RegistryError(f"{path} has format version {payload.get('version')}, expected {VERSION}")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu") -> CheckedModel:
    """Load any registry entry (member or ensemble) as a ready-to-attack ``nn.Module``.

    Returns a module in eval mode, preprocessing included, on ``device``, mapping images
    (N, 1, 28, 28) float in [0, 1] to (N, 2) logits (index 0 = digit 6, 1 = digit 7).
    Inputs of the wrong shape, dtype or range raise ``advdefense.checks.ImageError``.
    """
    entry = read_entry(path)
    model = build_from_spec(entry["kind"], entry["spec"])
    try:
        model.load_state_dict(entry["state_dict"], strict=True)
    except RuntimeError as exc:
        raise RegistryError(f"{path}: weights do not fit the architecture in its spec: "
                            f"{str(exc).splitlines()[0]}") from exc
    return CheckedModel(model, entry["name"], entry["kind"]).to(device).eval()


def model_path(models_dir: str | Path, name: str) -> Path:
    """Where the model called ``name`` lives in the registry."""
    return Path(models_dir) / f"{name}{SUFFIX}"


def list_models(models_dir: str | Path) -> list[str]:
    """Names of all registry entries in ``models_dir``, sorted."""
    return sorted(p.stem for p in Path(models_dir).glob(f"*{SUFFIX}"))
