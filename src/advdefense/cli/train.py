"""Train one model (a member or an ensemble head) and register it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from advdefense.checks import ConfigError
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
from advdefense.cli.resume import check_training_checkpoint, make_resumable
from advdefense.registry import atomic_write_text, model_path, read_entry, save_model


def config_digest(cfg: DictConfig) -> str:
    """Hash of everything that determines the trained weights (not paths, loggers or names)."""
    keep = {k: plain(cfg.get(k)) for k in ("data", "model", "trainer", "seed")}
    for k in ("default_root_dir",):
        keep["trainer"].pop(k, None)
    for k in ("root", "num_workers", "timeout", "mirrors", "sources", "checksums"):
        keep["data"].pop(k, None)
    if isinstance(keep["model"], dict) and keep["model"].get("members"):
        # An ensemble depends on its members' weights: a retrained member retrains it too.
        keep["model"].pop("models_dir", None)
        keep["member_files"] = {name: _file_digest(model_path(cfg.paths.models_dir, name))
                                for name in keep["model"]["members"]}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def already_registered(cfg: DictConfig) -> bool:
    path = model_path(cfg.paths.models_dir, cfg.name)
    if not path.is_file():
        return False
    try:
        return read_entry(path)["config"].get("digest") == config_digest(cfg)
    except Exception:  # a corrupt entry is simply retrained
        return False


def _resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from (checked readable), or None to start afresh."""
    if cfg.get("ckpt_path") in (None, ""):
        return None
    if cfg.ckpt_path == "last":
        # single runs: <task>/runs/<time>-<hex>_<name>/;
        # multirun jobs: <task>/multiruns/<time>-<hex>/<n>_<name>/
        run_dir = re.compile(
            rf"(\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d(-[0-9A-Za-z]+)?|\d+)_{re.escape(cfg.name)}")
        runs = [p for p in Path(cfg.paths.log_dir).glob(f"{cfg.task_name}/**/checkpoints/last.ckpt")
                if run_dir.fullmatch(p.parent.parent.name)]
        runs.sort(key=lambda p: p.stat().st_mtime)
        if not runs:
            raise FileNotFoundError(f"ckpt_path=last: no last.ckpt for '{cfg.name}' under "
                                    f"{cfg.paths.log_dir}/{cfg.task_name}; start without ckpt_path")
        path = runs[-1]
    else:
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path} does not exist; use a "
                                    "<run>/checkpoints/*.ckpt file or ckpt_path=last")
    check_training_checkpoint(path)
    log.info("resuming '%s' from %s", cfg.name, path)
    return str(path)


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
    if cfg.get("skip_if_registered") and already_registered(cfg):
        log.info("'%s' is already registered with this config: skipping", cfg.name)
        return dict(read_entry(model_path(cfg.paths.models_dir, cfg.name))["metrics"])
    # Everything that can be wrong with the config fails here, before data is read or anything
    # is written: the resume checkpoint, the device, then the constructors' own checks.
    ckpt_path = _resume_path(cfg)
    _check_accelerator(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    model = build(cfg.model, "model")
    datamodule = build(cfg.data, "data")
    callbacks = build_callbacks(cfg)
    if ckpt_path is not None:  # keep writing checkpoints where the interrupted run did
        for cb in callbacks:
            if isinstance(cb, ModelCheckpoint):
                cb.dirpath = str(Path(ckpt_path).parent)
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    if isinstance(datamodule, pl.LightningDataModule):
        make_resumable(datamodule, int(cfg.seed))
    for lg in loggers:
        lg.log_hyperparams(plain(cfg) | {"name": cfg.name})
    metrics: dict[str, float] = {}
    if getattr(model, "trainable", True):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            log.error("'%s' stopped by SIGTERM; resume with: python train.py <same overrides> "
                      "ckpt_path=last", cfg.name)
            raise SystemExit(143) from None
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
        if best:
            model.load_state_dict(_load_weights(best))
    else:
        log.info("'%s' has no trainable parameters: testing and registering it as is", cfg.name)
    if cfg.get("test"):
        metrics |= {k: float(v) for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()}
    if cfg.get("register") and trainer.is_global_zero:
        kind, spec = registry_spec(cfg, model)
        path = save_model(model_path(cfg.paths.models_dir, cfg.name), model.model, kind, cfg.name,
                          spec, metrics, {"digest": config_digest(cfg), "run": plain(cfg)})
        atomic_write_text(path.with_suffix(".yaml"), OmegaConf.to_yaml(cfg, resolve=True))
        log.info("registered %s", path)
    print_metrics(cfg.name, metrics)
    return metrics


def _load_weights(path: str) -> dict[str, Any]:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["state_dict"]
