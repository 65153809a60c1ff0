"""A training loader that can resume mid-epoch: epoch-seeded shuffle, position in checkpoints.

Epoch ``e`` shuffles with ``seed + e`` (:class:`ResumableSampler`, a ``DistributedSampler``, so it
also shards the data over DDP processes), whatever this process saw before; the loader's
``state_dict`` (which Lightning saves in every checkpoint) records the epoch and the batches of
it already done, and :meth:`ResumableLoader.load_state_dict` skips those on resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Epoch-seeded shuffle (``seed + epoch``) that can skip the first samples of an epoch."""

    def __init__(self, dataset: Any, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class ResumableLoader(DataLoader):
    """A DataLoader whose position (epoch, batches done) Lightning saves in its checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done = 0

    def __iter__(self) -> Iterator[Any]:
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


def resumable_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0,
                     world_size: int = 1, rank: int = 0) -> ResumableLoader:
    """Shuffled batches of ``dataset`` through a :class:`ResumableLoader`.

    Epoch ``e`` is a permutation seeded by ``seed + e``, sharded over ``world_size`` processes
    (this one is ``rank``); the last batch may be short. The loader's own generator is seeded
    too, so building or iterating it never draws from the global RNG.
    """
    return ResumableLoader(
        dataset, batch_size=batch_size,
        sampler=ResumableSampler(dataset, world_size, rank, seed),
        num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0)
