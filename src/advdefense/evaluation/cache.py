"""On-disk cache of finished grid cells, so a rerun (or a run resumed after a kill) redoes nothing.

One cell = one (model, attack, threat) evaluation. Its key hashes everything that determines
the result: the model file's SHA-256, the attack's name and full config, the threat model,
the surrogate file's hash (transfer), and the evaluated subset (n, seed, index digest). Each
cell is one JSON file ``<dir>/<key>.json`` written atomically (temporary file + os.replace),
so a kill leaves either the finished file or nothing, never half a file. Tensors (transfer
images crafted on the surrogate) are stored the same way as ``<key>.pt``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch

from advdefense.registry import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)
_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoized on path, size and mtime)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _HASHES[memo] = h.hexdigest()
    return _HASHES[memo]


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
