"""The resumable training loader: epoch-seeded shuffle, and a position that resumes mid-epoch.

(End to end, a killed ``train.py`` run resumes to identical weights: tests/cli/test_resume.py.)
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from advdefense.data import Mnist67DataModule
from advdefense.training.loader import ResumableLoader, ResumableSampler, resumable_loader

DATA = TensorDataset(torch.arange(50).float(), torch.arange(50))


def _order(loader) -> list[int]:
    return [int(i) for _, labels in loader for i in labels]


def test_each_epoch_is_its_own_seeded_permutation():
    loader = resumable_loader(DATA, batch_size=8, seed=3)
    first = _order(loader)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert _order(resumable_loader(DATA, batch_size=8, seed=3)) == first
    loader.sampler.set_epoch(1)
    second = _order(loader)
    assert second != first and sorted(second) == list(range(50))
    fresh = resumable_loader(DATA, batch_size=8, seed=3)
    fresh.sampler.set_epoch(1)  # epoch e shuffles with seed + e, whatever came before
    assert _order(fresh) == second


def test_a_loader_resumes_after_the_batches_done():
    full = resumable_loader(DATA, batch_size=8, seed=0)
    full.sampler.set_epoch(2)
    uninterrupted = _order(full)
    run = resumable_loader(DATA, batch_size=8, seed=0)
    run.sampler.set_epoch(2)
    seen = []
    for _, labels in run:
        seen += labels.tolist()
        if len(seen) == 24:  # stop after 3 batches, as a checkpoint would
            break
    state = run.state_dict()
    assert state == {"epoch": 2, "batches_done": 3}
    resumed = resumable_loader(DATA, batch_size=8, seed=0)
    resumed.load_state_dict(state)
    assert seen + _order(resumed) == uninterrupted
    assert resumed.state_dict() == {"epoch": 2, "batches_done": 7}
    assert _order(resumed) == uninterrupted  # the skip applies to one epoch only


def test_the_datamodule_serves_training_batches_resumably(data_dir):
    dm = Mnist67DataModule(data_dir, sources=["folder"], val_size=50, train_subset=100,
                           batch_size=32, seed=4)
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and isinstance(loader.sampler, ResumableSampler)
    assert loader.sampler.seed == 4 and loader.batch_size == 32
    assert sum(len(y) for _, y in loader) == 100
