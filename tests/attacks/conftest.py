"""Small fixtures for the attack tests: a subset of real digits and tiny models."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def digits(mnist67_test) -> tuple[torch.Tensor, torch.Tensor]:
    """128 real test digits (both classes) and their labels."""
    images, labels = mnist67_test
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(images), generator=g)[:128]
    return images[idx].contiguous(), labels[idx].contiguous()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine two threads run ~7x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
