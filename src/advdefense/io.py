"""File I/O shared by the whole package: atomic writes and file digests.

Every file the package writes (registry entries, the MNIST cache, downloads, evaluation
records, reports) goes through :func:`atomic_open`: the bytes land in a temporary file beside
the target, are flushed to disk, and replace the target with ``os.replace``. A reader sees the
old file or the new one, never half of one; a failed write leaves the old file untouched.

Every file digest (model files in cache keys and config digests, downloaded archives against
their published checksums) is :func:`file_digest`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_DIGESTS: dict[tuple[str, str, int, int], str] = {}


@contextmanager
def atomic_open(path: str | Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Open a temporary file for binary writing that replaces ``path`` when the block ends.

    The temporary file (``.<name>.<random><suffix>``, beside ``path``; parent folders are
    created) is flushed, fsynced, made world-readable (0644) and moved over ``path`` if the
    block exits normally. If the block raises, the temporary file is removed, ``path`` is left
    as it was, and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_open`): never half-written."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib`` algorithm name, default SHA-256).

    Read in 1 MiB chunks. Memoized on the resolved path, inode, size and modification time (ns)
    (an atomic replace makes a new inode), so
    hashing the same unchanged model file for every evaluation cell costs one read.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    stat = path.stat()
    memo = (algorithm, str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]
