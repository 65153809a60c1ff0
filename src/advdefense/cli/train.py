"""Train one model (a member or an ensemble head) and register it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from advdefense.cli.common import build, build_callbacks, build_loggers, log, plain, print_table
from advdefense.registry import model_path, read_entry, save_model


def config_digest(cfg: DictConfig) -> str:
    """Hash of everything that determines the trained weights (not paths, loggers or names)."""
    keep = {k: plain(cfg.get(k)) for k in ("data", "model", "trainer", "seed")}
    for k in ("default_root_dir",):
        keep["trainer"].pop(k, None)
    for k in ("root", "num_workers", "timeout", "mirrors", "sources", "checksums"):
        keep["data"].pop(k, None)
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def already_registered(cfg: DictConfig) -> bool:
    path = model_path(cfg.paths.models_dir, cfg.name)
    if not path.is_file():
        return False
    try:
        return read_entry(path)["config"].get("digest") == config_digest(cfg)
    except Exception:  # a corrupt entry is simply retrained
        return False


def _resume_path(cfg: DictConfig) -> str | None:
    if cfg.get("ckpt_path") in (None, ""):
        return None
    if cfg.ckpt_path == "last":
        runs = sorted(Path(cfg.paths.log_dir).glob(f"{cfg.task_name}/**/*_{cfg.name}/checkpoints/last.ckpt"),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise FileNotFoundError(f"ckpt_path=last: no last.ckpt for '{cfg.name}' under "
                                    f"{cfg.paths.log_dir}/{cfg.task_name}; start without ckpt_path")
        return str(runs[-1])
    if not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path} does not exist")
    return str(cfg.ckpt_path)


def registry_spec(cfg: DictConfig, model: pl.LightningModule) -> tuple[str, dict[str, Any]]:
    if hasattr(model, "registry_spec"):
        return model.registry_spec()
    return "member", {"preprocess": plain(cfg.model.preprocess), "net": plain(cfg.model.net)}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data``, test it, and save it as ``models/<name>.ckpt``."""
    if cfg.get("skip_if_registered") and already_registered(cfg):
        log.info("'%s' is already registered with this config: skipping", cfg.name)
        return dict(read_entry(model_path(cfg.paths.models_dir, cfg.name))["metrics"])
    pl.seed_everything(cfg.seed, workers=True)
    ckpt_path = _resume_path(cfg)
    datamodule = build(cfg.data, "data")
    model = build(cfg.model, "model")
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = build(cfg.trainer, "trainer", callbacks=build_callbacks(cfg), logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(plain(cfg) | {"name": cfg.name})
    metrics: dict[str, float] = {}
    if getattr(model, "trainable", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
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
        path.with_suffix(".yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("registered %s", path)
    print_table(f"{cfg.name}: test metrics",
                [{"metric": k, "value": v} for k, v in metrics.items() if k.startswith("test/")])
    return metrics


def _load_weights(path: str) -> dict[str, Any]:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["state_dict"]
