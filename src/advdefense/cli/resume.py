"""Never lose a training run: resumable shuffling, RNG state in checkpoints, save on SIGTERM.

A run killed at any step resumes with ``ckpt_path=last`` and ends with the same weights as a run
that was never interrupted (same seed, ``trainer.deterministic=true``), because

* the training order does not depend on how many epochs this process has seen: epoch ``e``
  shuffles with ``seed + e`` (:class:`ResumableSampler`, a ``DistributedSampler``, so it also
  shards the data under DDP), and the loader's ``state_dict`` (saved by Lightning in every
  checkpoint) records how many batches of the current epoch are done, which are skipped on
  resume;
* :class:`ResumeState` keeps the torch / numpy / Python RNG states in the checkpoint (random
  starts and random defenses continue the same stream), and on SIGTERM saves ``last.ckpt``
  after the current step before Lightning stops the run.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, DistributedSampler

from advdefense.checks import ConfigError


class ResumableSampler(DistributedSampler):
    """Epoch-seeded shuffle (``seed + epoch``) that can skip the first samples of an epoch."""

    def __init__(self, dataset: Any, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class ResumableLoader(DataLoader):
    """A DataLoader whose position (epoch, batches done) Lightning saves in its checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done = 0

    def __iter__(self):
        sampler = self.sampler
        self.done = sampler.skip // self.batch_size if isinstance(sampler, ResumableSampler) else 0
        for batch in super().__iter__():
            self.done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches_done": int(self.done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if isinstance(self.sampler, ResumableSampler):
            self.sampler.set_epoch(int(state["epoch"]))
            self.sampler.skip = int(state["batches_done"]) * int(self.batch_size)


def make_resumable(datamodule: pl.LightningDataModule, seed: int) -> None:
    """Serve ``datamodule``'s training batches through a :class:`ResumableLoader`.

    Wraps its ``train_dataloader()``: same dataset, batch size and workers, with the shuffle
    replaced by :class:`ResumableSampler` (sharded over the trainer's processes). A partial of
    a module function, so the data module still pickles (``ddp_spawn``).
    """
    datamodule.train_dataloader = functools.partial(  # type: ignore[method-assign]
        _resumable_train_dataloader, datamodule, type(datamodule).train_dataloader, seed)


def _resumable_train_dataloader(datamodule: pl.LightningDataModule, original: Any,
                                seed: int) -> DataLoader:
    loader = original(datamodule)
    if not isinstance(loader, DataLoader) or isinstance(loader, ResumableLoader):
        return loader
    trainer = datamodule.trainer
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    return ResumableLoader(
        loader.dataset, batch_size=loader.batch_size,
        sampler=ResumableSampler(loader.dataset, world, rank, seed),
        num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        generator=torch.Generator().manual_seed(seed),  # never draws from the global RNG
        persistent_workers=loader.num_workers > 0)


class ResumeState(Callback):
    """RNG states into every checkpoint and back; ``last.ckpt`` on SIGTERM."""

    def __init__(self) -> None:
        self.saved_on_sigterm: str | None = None

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {"torch": torch.get_rng_state(),
                "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                          "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                          "cached_gaussian": float(np_state[4])},
                "python": _to_plain(random.getstate())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                             n["has_gauss"], n["cached_gaussian"]))
        random.setstate(_from_plain(state["python"]))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.received_sigterm and self.saved_on_sigterm is None:
            path = last_checkpoint_path(trainer)
            if path is not None:
                trainer.save_checkpoint(path)
                self.saved_on_sigterm = str(path)
                pl.utilities.rank_zero_info(f"SIGTERM: saved {path}; resume with ckpt_path=last")


def last_checkpoint_path(trainer: pl.Trainer) -> Path | None:
    """``<dirpath>/last.ckpt`` of the first ModelCheckpoint that keeps a last checkpoint."""
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
            return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
    return None


def _to_plain(obj: Any) -> Any:
    return [_to_plain(o) for o in obj] if isinstance(obj, tuple | list) else obj


def _from_plain(obj: Any) -> Any:
    return tuple(_from_plain(o) for o in obj) if isinstance(obj, list) else obj


def check_training_checkpoint(path: str | Path) -> None:
    """Raise ConfigError unless ``path`` is a readable Lightning training checkpoint.

    Read with ``weights_only=True`` (tensors and plain types only: nothing is unpickled).
    """
    fix = ("delete it and resume from an older checkpoint (ckpt_path=<run>/checkpoints/"
           "epoch_NNN.ckpt), or start over without ckpt_path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled foreign objects
        first = (str(exc).splitlines() or [""])[0][:200]
        raise ConfigError("ckpt_path", str(path),
                          f"is not a readable training checkpoint ({type(exc).__name__}: {first}); "
                          f"it may be truncated or corrupt: {fix}") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "loops"} <= set(ckpt):
        what = ("a model registry file (models/<name>.ckpt) holds no training state"
                if isinstance(ckpt, dict) and ckpt.get("format") == "advdefense-model"
                else "it has no Lightning training state (state_dict, loops)")
        raise ConfigError("ckpt_path", str(path), f"must be a Lightning training checkpoint: {what}; "
                          "use <run>/checkpoints/last.ckpt or ckpt_path=last")
