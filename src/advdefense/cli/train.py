"""Train one model (a member or an ensemble head) and register it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from advdefense.checks import ConfigError, check_int, check_writable
from advdefense.cli.common import (
    build,
    build_callbacks,
    build_loggers,
    log,
    plain,
    print_metrics,
    quiet_third_party,
)
from advdefense.cli.failures import in_multirun, record_failure
from advdefense.registry import RegistryError, model_path, read_entry, register_model
from advdefense.training.digest import config_digest
from advdefense.training.resume import (
    ResumeState,
    check_training_checkpoint,
    find_checkpoints,
    furthest,
    last_checkpoint_path,
    mark_finished,
    stop_on_sigint,
)


def already_registered(cfg: DictConfig) -> bool:
    path = model_path(cfg.paths.models_dir, cfg.name)
    if not path.is_file():
        return False
    try:
        return read_entry(path)["config"].get("digest") == config_digest(cfg)
    except Exception:  # a corrupt entry is simply retrained
        return False


def rerun_command(*extra: str) -> str:
    """This run's command line (``python train.py`` + its overrides) with ``extra`` overrides.

    Overrides come from Hydra (the job's own ones in a multirun); any ``ckpt_path=`` is dropped.
    Outside Hydra they are written as ``<same overrides>``.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        task = [o for o in HydraConfig.get().overrides.task
                if not o.split("=", 1)[0].lstrip("+~").startswith("ckpt_path")]
        args = [shlex.quote(o) for o in task]
    else:
        args = ["<same overrides>"]
    return " ".join(["python train.py", *args, *map(shlex.quote, extra)])


def _resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from (checked readable), or None to start afresh.

    ``ckpt_path=last`` takes, among the ``last.ckpt`` of runs with this name, the one with the
    highest global step whose recorded config digest matches this config (checkpoints of older
    versions, which recorded none, only if no checkpoint matches).
    """
    if cfg.get("ckpt_path") in (None, ""):
        return None
    if cfg.ckpt_path == "last":
        where = f"{cfg.paths.log_dir}/{cfg.task_name}"
        found = find_checkpoints(cfg.paths.log_dir, cfg.task_name, cfg.name)
        if not found:
            raise FileNotFoundError(f"ckpt_path=last: no last.ckpt for '{cfg.name}' under "
                                    f"{where}; start without ckpt_path")
        digest = config_digest(cfg)
        matching = [i for i in found if i.digest == digest]
        legacy = [i for i in found if i.digest is None]
        if matching:
            best = furthest(matching)
            why = f"the furthest of {len(matching)} with this config"
        elif legacy:
            best = furthest(legacy)
            why = "it records no config (an older version wrote it): check it is this run's"
        else:
            other = furthest(found)
            raise ConfigError("ckpt_path", "last", f"none of the {len(found)} last.ckpt of "
                              f"'{cfg.name}' under {where} was trained with this config (the "
                              f"furthest other: {other.path}, global step {other.step}); resume "
                              "one anyway with ckpt_path=<that file>, or start over without "
                              "ckpt_path")
        path = best.path
        log.info("ckpt_path=last: %s is at global step %d (%s)", path, best.step, why)
    else:
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path} does not exist; use a "
                                    "<run>/checkpoints/*.ckpt file or ckpt_path=last")
    check_training_checkpoint(path)
    log.info("resuming '%s' from %s", cfg.name, path)
    return str(path)


def _hint_interrupted(cfg: DictConfig) -> None:
    """Starting afresh while an interrupted run with this config exists: say how to resume it."""
    digest = config_digest(cfg)
    try:
        found = [i for i in find_checkpoints(cfg.paths.log_dir, cfg.task_name, cfg.name)
                 if i.digest == digest and not i.finished]
    except OSError:
        return
    if found:
        best = furthest(found)
        log.warning("'%s' has an interrupted run with this config (%s, global step %d); "
                    "starting afresh. To continue it instead: %s", cfg.name, best.path, best.step,
                    rerun_command("ckpt_path=last"))


def _check_trainer(cfg: DictConfig) -> None:
    """Training lengths that would register an untrained model, or crash inside Lightning."""
    trainer = cfg.get("trainer") or {}
    check_int("trainer.max_epochs", trainer.get("max_epochs"), 1,
              " (training epochs; 0 would register an untrained model)")
    for key in ("min_epochs", "max_steps"):
        value = trainer.get(key)
        if value is None or value == -1:
            continue
        check_int(f"trainer.{key}", value, 0 if key == "min_epochs" else 1,
                  "" if key == "min_epochs" else " (or -1: no limit)")


def _check_outputs(cfg: DictConfig, model: object) -> None:
    """The log folder, and the models folder when registering, take files: checked before fit."""
    import torch

    state = model.state_dict() if isinstance(model, torch.nn.Module) else {}
    size = sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
    # checkpoints hold weights and optimizer moments; a few coexist while one replaces another
    check_writable("paths.output_dir", cfg.paths.output_dir, need_bytes=12 * size + 16 * 2**20)
    if cfg.get("register"):
        check_writable("paths.models_dir", cfg.paths.models_dir, need_bytes=2 * size + 2**20)


def _check_accelerator(cfg: DictConfig) -> None:
    """A device that is not there fails now, naming the key (before data or models load)."""
    import torch

    acc = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", acc,
                          "no CUDA GPU is visible on this machine (torch.cuda.is_available() is "
                          "False); use trainer=default or trainer=ddp_cpu, or accelerator=cpu/auto")
    if acc == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator", acc, "MPS is not available on this machine; "
                          "use cpu or auto")


def registry_spec(cfg: DictConfig, model: pl.LightningModule) -> tuple[str, dict[str, Any]]:
    if hasattr(model, "registry_spec"):
        return model.registry_spec()
    return "member", {"preprocess": plain(cfg.model.preprocess), "net": plain(cfg.model.net)}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data``, test it, and save it as ``models/<name>.ckpt``.

    In a multirun with ``continue_on_error`` (default), an exception is recorded in the job's
    ``failed.json`` instead of stopping the sweep (see :mod:`advdefense.cli.failures`).
    """
    if cfg.get("continue_on_error", False) and in_multirun():
        try:
            return _train(cfg)
        except Exception as exc:
            record_failure(cfg, exc)
            return {}
    return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, float]:
    quiet_third_party()
    _check_trainer(cfg)
    if cfg.get("skip_if_registered") and already_registered(cfg):
        log.info("'%s' is already registered with this config: skipping", cfg.name)
        return dict(read_entry(model_path(cfg.paths.models_dir, cfg.name))["metrics"])
    # Everything that can be wrong with the config fails here, before data is read or anything
    # is written: the resume checkpoint, the device, the constructors' own checks, then whether
    # the log and models folders can take the files.
    ckpt_path = _resume_path(cfg)
    _check_accelerator(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    model = build(cfg.model, "model")
    _check_outputs(cfg, model)
    if ckpt_path is None:
        _hint_interrupted(cfg)
    datamodule = build(cfg.data, "data")
    callbacks = build_callbacks(cfg)
    for cb in callbacks:
        if isinstance(cb, ResumeState):  # checkpoints record which config trained them
            cb.run_info = {"name": str(cfg.name), "digest": config_digest(cfg)}
    if ckpt_path is not None:  # keep writing checkpoints where the interrupted run did
        for cb in callbacks:
            if isinstance(cb, ModelCheckpoint):
                cb.dirpath = str(Path(ckpt_path).parent)
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(plain(cfg) | {"name": cfg.name})
    metrics: dict[str, float] = {}
    if getattr(model, "trainable", True):
        with stop_on_sigint(trainer) as stop:
            try:
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            except SIGTERMException:
                _stopped(cfg, trainer, stop["signal"])
        mark_finished(trainer)
        if any(isinstance(cb, ResumeState) and cb.pending for cb in trainer.callbacks):
            _stopped(cfg, trainer, stop["signal"])  # signalled after the last step: fit is done
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not metrics and ckpt_path is not None:  # resumed a finished run: nothing was trained
            metrics = {k: float(v) for k, v in trainer.validate(
                model, datamodule=datamodule, verbose=False)[0].items() if k.startswith("val/")}
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
        if best:
            metrics = _load_best(cfg, trainer, model, datamodule, best, metrics)
    else:
        log.info("'%s' has no trainable parameters: testing and registering it as is", cfg.name)
    if cfg.get("test"):
        metrics |= {k: float(v) for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()}
    if cfg.get("register") and trainer.is_global_zero:
        _register(cfg, model, trainer, metrics)
    print_metrics(cfg.name, metrics)
    return metrics


def _stopped(cfg: DictConfig, trainer: pl.Trainer, sig: str) -> None:
    """After SIGTERM / Ctrl-C stopped ``fit``: say what was saved and how to resume; exit."""
    saved = last_checkpoint_path(trainer)
    if saved is not None and saved.is_file():
        where = f"the run is saved in {saved}"
        # ckpt_path=last where it finds this file; else (an experiment's stage folder) the file
        digest = config_digest(cfg)
        found = [i for i in find_checkpoints(cfg.paths.log_dir, cfg.task_name, cfg.name)
                 if i.digest == digest]
        last = found and furthest(found).path.resolve() == saved.resolve()
        resume = "ckpt_path=last" if last else f"ckpt_path={saved.resolve()}"
    else:
        where = "no checkpoint was saved (callbacks.model_checkpoint / step_checkpoint off?)"
        resume = "ckpt_path=last"
    log.error("'%s' stopped by %s; %s. Resume with: %s", cfg.name, sig, where,
              rerun_command(resume))
    raise SystemExit(130 if sig == "SIGINT" else 143) from None


def _register(cfg: DictConfig, model: pl.LightningModule, trainer: pl.Trainer,
              metrics: dict[str, float]) -> None:
    """Write the registry entry; if that fails, name the surviving weights and how to register them."""
    kind, spec = registry_spec(cfg, model)
    try:
        done = register_model(cfg.paths.models_dir, cfg.name, model.model, kind, spec, metrics,
                              {"digest": config_digest(cfg), "run": plain(cfg)},
                              OmegaConf.to_yaml(cfg, resolve=True))
    except OSError as exc:
        last = last_checkpoint_path(trainer)
        if last is None or not last.is_file():
            raise RegistryError(f"could not write {model_path(cfg.paths.models_dir, cfg.name)} "
                                f"({exc}); no Lightning checkpoint of this run survives: fix the "
                                "folder and train again") from exc
        raise RegistryError(
            f"could not write {model_path(cfg.paths.models_dir, cfg.name)} ({exc}). The trained "
            f"weights survive in {last.parent} (last.ckpt, and the best epoch's file). Fix the "
            "models folder (space, permissions) or pick another with paths.models_dir=..., then "
            "register them without training again: "
            f"{rerun_command(f'ckpt_path={last.resolve()}')}") from exc
    (log.warning if done.worse else log.info)("%s", done.message())


def _load_best(cfg: DictConfig, trainer: pl.Trainer, model: pl.LightningModule,
               datamodule: pl.LightningDataModule, path: str,
               metrics: dict[str, float]) -> dict[str, float]:
    """Load the best checkpoint's weights (``val/select_acc``) into ``model``; return the
    validation metrics of those weights (the last epoch's unless an earlier epoch was best)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["state_dict"])
    epoch, last = int(ckpt.get("epoch", -1)), trainer.current_epoch - 1
    monitor = trainer.checkpoint_callback.monitor
    log.info("'%s': keeping epoch %d of %d (best %s %.4f)", cfg.name, epoch + 1, last + 1,
             monitor, float(trainer.checkpoint_callback.best_model_score or float("nan")))
    if epoch == last:
        return metrics
    return {k: float(v) for k, v in trainer.validate(model, datamodule=datamodule,
                                                     verbose=False)[0].items()
            if k.startswith("val/")}
