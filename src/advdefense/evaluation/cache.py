"""On-disk cache of finished grid cells, so a rerun (or a run resumed after a kill) redoes nothing.

One cell = one (model, attack, threat) evaluation. Its key hashes everything that determines
the result: the model file's SHA-256, the attack's name and full config, the threat model,
the surrogate file's hash (transfer), the evaluated subset (n, seed, index digest), and the
code version (:func:`code_version`: the source of the modules that compute a cell, and the
torch and Kornia versions), so a changed attack never reuses a stale cell. Each
cell is one JSON file ``<dir>/<key>.json`` written atomically (temporary file + os.replace),
so a kill leaves either the finished file or nothing, never half a file. Tensors (transfer
images crafted on the surrogate) are stored the same way as ``<key>.pt``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch

from advdefense.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)
# What computes a cell's numbers, relative to the package folder: every attack, the
# preprocessing, the ensembles, the nets and what white-box attacks see (``attackable``:
# straight-through rounding, and its fast path), the certification; a folder stands for its
# *.py files.
CODE_SOURCES = ("attacks", "preprocess.py", "ensembles.py", "nets.py", "ablation.py", "models.py",
                "fastpath.py", "certify.py",
                "evaluation/threats.py")


def source_digest(root: str | Path, sources: tuple[str, ...] = CODE_SOURCES) -> str:
    """SHA-256 (16 hex) of the named source files under ``root``, in sorted path order.

    Each file contributes its path relative to ``root`` and its bytes, so an edit, a new file
    or a renamed one changes the digest. A missing source raises FileNotFoundError.
    """
    root = Path(root)
    h = hashlib.sha256()
    for name in sources:
        path = root / name
        if not path.exists():
            raise FileNotFoundError(f"code version source {path} does not exist")
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            h.update(file.relative_to(root).as_posix().encode() + b"\0")
            h.update(file.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """This installation's code version, part of every cell key (computed once per process):
    the digest of :data:`CODE_SOURCES` plus the torch and Kornia versions, e.g.
    ``"src=3f1c...;torch=2.13.0+cpu;kornia=0.8.1"``."""
    import kornia

    import advdefense

    digest = source_digest(Path(advdefense.__file__).parent)
    return f"src={digest};torch={torch.__version__};kornia={kornia.__version__}"


def data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 (16 hex) of the images' float32 values and the labels, in order: the identity
    of an evaluated image set, part of every cell key. Two sets of the same size and labels but
    other pixels (another seed's subset, another data source) never share a cell.

    Args:
        images: (N, 1, 28, 28) float in [0, 1], any device; labels: (N,) integers.
    """
    h = hashlib.sha256()
    h.update(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(b"\0" + labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cell_key(parts: dict[str, Any]) -> str:
    """Stable hex key of a JSON-able dict (sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class CellCache:
    """JSON records and tensors keyed by :func:`cell_key`; ``enabled=False`` never reads.

    Writes still happen when disabled, so ``eval.cache=false`` refreshes the cache.
    """

    def __init__(self, root: str | Path, enabled: bool = True) -> None:
        self.root, self.enabled = Path(root), bool(enabled)
        self.hits = self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record for ``key``, or None (missing, disabled or unreadable)."""
        path = self.root / f"{key}.json"
        if not self.enabled or not path.is_file():
            self.misses += 1
            return None
        try:
            record = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache file %s (%s)", path, exc)
            self.misses += 1
            return None
        self.hits += 1
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        atomic_write_text(self.root / f"{key}.json", json.dumps(record))

    def get_tensor(self, key: str) -> torch.Tensor | None:
        path = self.root / f"{key}.pt"
        if not self.enabled or not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a bad cache file is simply recomputed
            log.warning("ignoring unreadable cache file %s (%s)", path, exc)
            return None

    def put_tensor(self, key: str, tensor: torch.Tensor) -> None:
        buffer = io.BytesIO()
        torch.save(tensor.detach().cpu(), buffer)
        atomic_write_bytes(self.root / f"{key}.pt", buffer.getvalue())
