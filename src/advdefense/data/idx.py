"""The IDX file format of the official MNIST files: a reader and a (uint8) writer."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file (bad magic number, dimensions or length)."""



_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """Bytes of ``path``, gunzipped if the file starts with the gzip magic number."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"\x1f\x8b":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise IdxFormatError(f"{path}: corrupt or truncated gzip file ({e})") from e


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (raw or gzip-compressed) into an array of its declared shape.

    Layout: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions, one
    big-endian uint32 per dimension, then the data in C order.

    Raises:
        IdxFormatError: bad magic number, unknown type code, or data length not matching
            the declared dimensions.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxFormatError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'empty'}, "
                             "expected 0000 followed by a type code and the number of dimensions)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise IdxFormatError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise IdxFormatError(f"{path}: header declares {ndim} dimensions but is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    want = int(np.prod(dims)) * dtype.itemsize
    have = len(raw) - 4 - 4 * ndim
    if have != want:
        raise IdxFormatError(f"{path}: dimensions {dims} need {want} data bytes, file has {have}"
                             f" ({'truncated' if have < want else 'trailing bytes'})")
    data = np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed if ``path`` ends in ``.gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())

