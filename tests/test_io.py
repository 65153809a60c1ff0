"""advdefense.io: atomic writes and file digests."""

from __future__ import annotations

import hashlib
import os

import pytest

from advdefense.io import atomic_open, atomic_write_bytes, atomic_write_text, file_digest


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path) -> None:
    path = tmp_path / "sub" / "a.json"
    atomic_write_text(path, "first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_open(path, suffix=".part") as f:
        f.write(b"half of the new")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_file_digest_is_hashlib_and_follows_changes(tmp_path) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"x" * (3 << 20))  # more than one 1 MiB chunk
    assert file_digest(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(b"x" * (3 << 20)).hexdigest()
    atomic_write_bytes(path, b"retrained")  # a new file: new size and mtime
    assert file_digest(path) == hashlib.sha256(b"retrained").hexdigest()
    with pytest.raises(FileNotFoundError):
        file_digest(tmp_path / "missing")
