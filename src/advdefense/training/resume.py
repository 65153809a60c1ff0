"""Never lose a training run: resumable shuffling, RNG state in checkpoints, save on SIGTERM.

A run killed at any step resumes with ``ckpt_path=last`` and ends with the same weights as a run
that was never interrupted (same seed, ``trainer.deterministic=true``), because

* the training order does not depend on how many epochs this process has seen: epoch ``e``
  shuffles with ``seed + e`` (:class:`~advdefense.training.loader.ResumableSampler`, a
  ``DistributedSampler``, so it also shards the data under DDP), and the loader's
  ``state_dict`` (saved by Lightning in every checkpoint) records how many batches of the
  current epoch are done, which are skipped on resume (the data module builds its training
  loader so: :func:`~advdefense.training.loader.resumable_loader`);
* :class:`ResumeState` keeps the torch / numpy / Python RNG states in the checkpoint (random
  starts and random defenses continue the same stream), and on SIGTERM saves ``last.ckpt``
  at the end of the current training step, then lets Lightning stop the run;
* :func:`stop_on_sigint` treats Ctrl-C (SIGINT) like SIGTERM during ``fit``: the current step
  finishes, ``last.ckpt`` is saved, the runner prints the exact resume command and exits with
  status 130 (a second Ctrl-C quits at once);
* every checkpoint records the run's config digest (``checkpoint["advdefense"]``), so
  ``ckpt_path=last`` picks the furthest checkpoint trained with the same config
  (:func:`find_checkpoints`), and a plain rerun can say that an interrupted run exists.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from advdefense.checks import ConfigError
from advdefense.registry import text_file_reason

RUN_KEY = "advdefense"  # checkpoint[RUN_KEY] = {"name", "digest"} of the run that wrote it
FINISHED = "fit_finished.json"  # beside last.ckpt once fit() has ended normally


class ResumeState(Callback):
    """RNG states into every checkpoint and back; ``last.ckpt`` on SIGTERM (and SIGINT).

    ``run_info`` (set by the runner: the model's name and config digest) is written into every
    checkpoint as ``checkpoint["advdefense"]``.

    SIGTERM is deferred to a step boundary: from the sanity check on, this callback sits in front
    of Lightning's SIGTERM handler and only records the signal. At the end of the next training
    step it saves ``last.ckpt`` and then hands the signal to Lightning, which stops the run right
    after that step. Handing it over at once would race: a signal that lands after this hook but
    inside another callback's (the step checkpoint's save) would stop the run unsaved. A second
    SIGTERM goes to Lightning at once. ``pending`` is still true after ``fit`` when the signal
    came after the last training step; the runner then stops before testing.
    """

    def __init__(self) -> None:
        self.saved_on_sigterm: str | None = None
        self.run_info: dict[str, Any] = {}
        self.stop_signal = "SIGTERM"  # what made Lightning stop: SIGTERM, or SIGINT (Ctrl-C)
        self.pending = False  # a deferred SIGTERM not yet handed to Lightning
        self._lightning_handler: Any = None

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._defer_sigterm()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._defer_sigterm()

    def _defer_sigterm(self) -> None:
        """Put :meth:`_on_sigterm` in front of Lightning's handler (registered by ``fit``)."""
        if threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if current == self._on_sigterm:
            return
        self._lightning_handler = current
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.pending:  # a second SIGTERM: stop at Lightning's next check
            self._hand_over(signum, frame)
            return
        self.pending = True
        pl.utilities.rank_zero_info(f"Received {self.stop_signal}: stopping after the current "
                                    "training step")

    def _hand_over(self, signum: int = signal.SIGTERM, frame: Any = None) -> None:
        self.pending = False
        if callable(self._lightning_handler):
            self._lightning_handler(signum, frame)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.run_info:
            checkpoint[RUN_KEY] = dict(self.run_info)

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
        if (self.pending or trainer.received_sigterm) and self.saved_on_sigterm is None:
            path = last_checkpoint_path(trainer)
            if path is not None:
                trainer.save_checkpoint(path)
                self.saved_on_sigterm = str(path)
                pl.utilities.rank_zero_info(
                    f"{self.stop_signal}: saved {path}; resume with ckpt_path=last")
        if self.pending:
            self._hand_over()  # Lightning raises SIGTERMException once this step has ended


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


@contextmanager
def stop_on_sigint(trainer: pl.Trainer) -> Iterator[dict[str, str]]:
    """During ``fit``: the first Ctrl-C (SIGINT) stops the run the way SIGTERM does.

    The handler raises SIGTERM in this process, so the SIGTERM path runs: :class:`ResumeState`
    saves ``last.ckpt`` at the end of the current step and hands the signal to Lightning, which
    forwards it to launched child processes and raises ``SIGTERMException``. Yields a dict whose
    ``"signal"`` becomes ``"SIGINT"`` once Ctrl-C was pressed. A second Ctrl-C raises
    ``KeyboardInterrupt`` at once. Outside the main thread it does nothing.
    """
    state = {"signal": "SIGTERM"}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        if state["signal"] == "SIGINT" or signal.getsignal(signal.SIGTERM) in (
                signal.SIG_DFL, signal.SIG_IGN, None):  # not inside fit's handlers: plain Ctrl-C
            raise KeyboardInterrupt
        state["signal"] = "SIGINT"
        for cb in trainer.callbacks:
            if isinstance(cb, ResumeState):
                cb.stop_signal = "SIGINT"
        pl.utilities.rank_zero_info("\nCtrl-C: finishing the current step and saving a resumable "
                                    "checkpoint (press Ctrl-C again to quit at once)")
        signal.raise_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class CheckpointInfo:
    """A run's ``last.ckpt`` as :func:`find_checkpoints` sees it."""

    path: Path
    step: int  # global_step
    digest: str | None  # the config digest it was trained with; None: not recorded
    finished: bool  # fit() ended normally after writing it
    mtime: float


def find_checkpoints(log_dir: str | Path, task_name: str, name: str) -> list[CheckpointInfo]:
    """Every readable ``last.ckpt`` of runs called ``name`` under ``<log_dir>/<task_name>``.

    Single runs live in ``runs/<time>-<hex>_<name>/``, multirun jobs in
    ``multiruns/<time>-<hex>/<n>_<name>/``; the name must match exactly (``stacker`` is not
    ``linear_stacker``). Unreadable files are skipped.
    """
    import re

    run_dir = re.compile(rf"(\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d(-[0-9A-Za-z]+)?|\d+)_{re.escape(name)}")
    found = []
    for path in Path(log_dir).glob(f"{task_name}/**/checkpoints/last.ckpt"):
        if not run_dir.fullmatch(path.parent.parent.name):
            continue
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            mtime = path.stat().st_mtime
        except Exception:  # noqa: BLE001 -- a half-written or foreign file is not a candidate
            continue
        if not isinstance(ckpt, dict):
            continue
        info = ckpt.get(RUN_KEY) if isinstance(ckpt.get(RUN_KEY), dict) else {}
        found.append(CheckpointInfo(path, int(ckpt.get("global_step", 0) or 0), info.get("digest"),
                                    (path.parent / FINISHED).is_file(), mtime))
    return found


def furthest(infos: list[CheckpointInfo]) -> CheckpointInfo:
    """The checkpoint with the highest global step (the newest file among equals)."""
    return max(infos, key=lambda i: (i.step, i.mtime))


def mark_finished(trainer: pl.Trainer) -> None:
    """Record beside ``last.ckpt`` that ``fit`` ended normally (not an interrupted run)."""
    path = last_checkpoint_path(trainer)
    if path is not None and path.is_file() and trainer.is_global_zero:
        from advdefense.io import atomic_write_text

        atomic_write_text(path.parent / FINISHED, json.dumps({"global_step": trainer.global_step}))


def check_training_checkpoint(path: str | Path) -> None:
    """Raise ConfigError unless ``path`` is a readable Lightning training checkpoint.

    Read with ``weights_only=True`` (tensors and plain types only: nothing is unpickled).
    """
    fix = ("delete it and resume from an older checkpoint (ckpt_path=<run>/checkpoints/"
           "epoch_NNN.ckpt), or start over without ckpt_path")
    reason = text_file_reason(path)
    if reason is not None:
        raise ConfigError("ckpt_path", str(path), f"is not a training checkpoint: it is {reason}; "
                          "use <run>/checkpoints/last.ckpt or ckpt_path=last")
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
