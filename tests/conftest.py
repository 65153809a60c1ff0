"""Shared fixtures: real 6-vs-7 digits and a quickly trained undefended CNN."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import threads_per_worker, train_cnn

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# What train.py sets before composing (advdefense.cli.entry): configs composed in a test resolve
# paths.root_dir as the entry point would. Tests of the commands as users type them run in a
# fresh copy and drop it from their environment (tests/test_readme_commands.py).
os.environ.setdefault("ADVDEFENSE_ROOT", str(Path(__file__).resolve().parents[1]))
# pytest-xdist workers share the cores out (tests/helpers.threads_per_worker)
torch.set_num_threads(threads_per_worker())


@pytest.fixture(scope="session")
def mnist67_test() -> tuple[torch.Tensor, torch.Tensor]:
    """Every 6 and 7 of MNIST's test split: (1986, 1, 28, 28) in [0, 1] and labels."""
    from advdefense.data import load_mnist67

    return load_mnist67("test")


@pytest.fixture(scope="session")
def mnist67_train() -> tuple[torch.Tensor, torch.Tensor]:
    from advdefense.data import load_mnist67

    return load_mnist67("train")


@pytest.fixture(scope="session")
def undefended_cnn(mnist67_train) -> torch.nn.Module:
    """An undefended SmallCNN at >98% clean accuracy, trained once per test session."""
    return train_cnn(*mnist67_train)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A session-wide data folder whose 6/7 cache is built once from the package CSVs."""
    from advdefense.data import get_mnist67

    path = tmp_path_factory.mktemp("data")
    get_mnist67(path, sources=["package"])
    return path


def pytest_collection_modifyitems(config, items) -> None:
    """The README command chain, the longest test file, first: pytest-xdist (``--dist loadfile``)
    then starts it at once while the other workers take the remaining files."""
    items.sort(key=lambda item: item.path.name != "test_readme_commands.py")
