"""ResumeState defers SIGTERM to a step boundary, so a signal never stops a run unsaved."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advdefense.training import ResumeState


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _SignalIn(Callback):
    """Sends this process SIGTERM from inside one of its own hooks (after ResumeState's)."""

    def __init__(self, hook: str, step: int | None = None) -> None:
        self.hook, self.step, self.sent = hook, step, False

    def _maybe_send(self, trainer: pl.Trainer) -> None:
        if not self.sent and (self.step is None or trainer.global_step == self.step):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.hook == "on_train_batch_end":
            self._maybe_send(trainer)

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.hook == "on_train_end":
            self._maybe_send(trainer)


def _fit(tmp_path: Path, signaller: Callback) -> tuple[pl.Trainer, ResumeState]:
    data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    state = ResumeState()
    last = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    trainer = pl.Trainer(max_epochs=2, callbacks=[state, signaller, last], logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        trainer.fit(_Tiny(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=32))
    finally:
        assert signal.getsignal(signal.SIGTERM) == previous  # fit restores the handlers
    return trainer, state


def test_sigterm_inside_a_later_callback_still_saves_the_next_step(tmp_path):
    # the race the subprocess test once lost: the signal lands after ResumeState's hook ran
    with pytest.raises(SIGTERMException):
        _fit(tmp_path, _SignalIn("on_train_batch_end", step=3))
    trainer_step = torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"]
    assert trainer_step == 4  # the next step ended, was saved, and the run stopped there


def test_sigterm_after_the_last_step_leaves_fit_done_and_pending(tmp_path):
    trainer, state = _fit(tmp_path, _SignalIn("on_train_end"))
    assert trainer.global_step == 16 and state.pending  # the runner stops before testing
