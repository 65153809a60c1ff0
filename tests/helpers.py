"""Helpers shared by the test modules (import with ``from helpers import ...``).

Kept out of conftest.py: several test folders have a conftest.py of their own, and
``from conftest import ...`` would then be ambiguous.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig


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
    net.zero_grad(set_to_none=True)
    return net.eval()


ROOT = Path(__file__).resolve().parents[1]

# A tiny training config: few images, one epoch, CPU, no checkpoints beyond the registry's.
TINY = [
    "data.train_subset=1024", "data.val_size=128", "data.test_subset=128", "data.batch_size=64",
    "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
]
# ...plus a faster learning rate for members, so 16 steps reach > 90% accuracy.
TINY_MEMBER = [*TINY, "model.optimizer.lr=0.003"]


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


def threads_per_worker() -> int:
    """CPU threads for one pytest-xdist worker: the cores shared out among the workers (all of
    them without xdist), so parallel test files do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def compose_option(group: str, option: str) -> DictConfig:
    """``conf/<group>/<option>.yaml`` as Hydra composes it (its own defaults list applied), e.g.
    ``compose_option("defense", "pgd_spatial")``: the node that ``defense=pgd_spatial`` sets."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(f"{group}/{option}")
    GlobalHydra.instance().clear()
    return cfg[group]


class SigtermAtTrainEnd:
    """A callback (``+callbacks.sigterm._target_=helpers.SigtermAtTrainEnd``) that sends this
    process SIGTERM once the last training step is done, while fit is still running."""

    def __new__(cls):  # a Lightning Callback built lazily, so importing helpers stays light
        import signal

        from pytorch_lightning.callbacks import Callback

        class _Sigterm(Callback):
            def on_train_end(self, trainer, pl_module) -> None:
                os.kill(os.getpid(), signal.SIGTERM)

        return _Sigterm()
