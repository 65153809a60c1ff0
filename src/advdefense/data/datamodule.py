"""The Lightning data module of MNIST 6 vs 7 and the validation of its configuration."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset

from advdefense.checks import ConfigError
from advdefense.data.cache import get_mnist67, to_tensors
from advdefense.data.sources import (
    DEFAULT_MIRRORS,
    MNIST_MD5,
    N_TEST67,
    N_TRAIN67,
    SOURCES,
    Splits,
)
from advdefense.sampling import stratified_sample
from advdefense.training.loader import resumable_loader


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
        val_idx = stratified_sample(ty, self.val_size, (self.seed, 0))
        train_idx = np.setdiff1d(np.arange(len(ty)), val_idx)
        if self.train_subset is not None:
            _check_int("data.train_subset", self.train_subset, 1, len(train_idx))
            keep = stratified_sample(ty[train_idx], self.train_subset, (self.seed, 1))
            train_idx = train_idx[keep]
        if self.test_subset is not None:
            _check_int("data.test_subset", self.test_subset, 1, len(sy))
            keep = stratified_sample(sy, self.test_subset, (self.seed, 2))
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
