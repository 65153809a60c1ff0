"""Shared fixtures: real 6-vs-7 digits and a quickly trained undefended CNN."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def mnist67_test() -> tuple[torch.Tensor, torch.Tensor]:
    """Every 6 and 7 of MNIST's test split: (1986, 1, 28, 28) in [0, 1] and labels."""
    from advdefense.data import load_mnist67

    return load_mnist67("test")


@pytest.fixture(scope="session")
def mnist67_train() -> tuple[torch.Tensor, torch.Tensor]:
    from advdefense.data import load_mnist67

    return load_mnist67("train")


def train_cnn(images: torch.Tensor, labels: torch.Tensor, epochs: int = 2, seed: int = 0,
              n: int = 4000) -> torch.nn.Module:
    """Train an undefended SmallCNN on the first ``n`` images with a plain loop (seconds)."""
    from advdefense.nets import SmallCNN

    torch.manual_seed(seed)
    net = SmallCNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y = images[:n], labels[:n]
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="session")
def undefended_cnn(mnist67_train) -> torch.nn.Module:
    """An undefended SmallCNN at >98% clean accuracy, trained once per test session."""
    return train_cnn(*mnist67_train)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

# A tiny training config: few images, one epoch, CPU, no checkpoints beyond the registry's.
TINY = [
    "data.train_subset=1024", "data.val_size=128", "data.test_subset=128", "data.batch_size=64",
    "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
]
# ...plus a faster learning rate for members, so 16 steps reach > 90% accuracy.
TINY_MEMBER = [*TINY, "model.optimizer.lr=0.003"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> __import__('pathlib').Path:
    """A session-wide data folder whose 6/7 cache is built once from the package CSVs."""
    from advdefense.data import get_mnist67

    path = tmp_path_factory.mktemp("data")
    get_mnist67(path, sources=["package"])
    return path


def compose(config_name: str, overrides: list[str], tmp_path, data_dir) -> DictConfig:  # noqa: F821
    """Compose ``conf/<config_name>.yaml`` as Hydra would, with all paths under ``tmp_path``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.output_dir = str(tmp_path / "out")
        del cfg.hydra
    return cfg
