"""Helpers shared by the Hydra-aware runners."""

from __future__ import annotations

import logging
import os
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from advdefense.checks import ConfigError

log = logging.getLogger("advdefense")


def build(node: DictConfig | None, what: str, **kwargs: Any) -> Any:
    """``instantiate`` with our own config errors surfaced unwrapped (they name key and fix)."""
    if node is None:
        return None
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None:
            if isinstance(cause, ConfigError | FileNotFoundError):
                raise cause from None
            cause = cause.__cause__
        raise ConfigError(what, OmegaConf.to_container(node, resolve=False),
                          f"could not be built: {exc}") from exc


def plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (for registry specs and logs)."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def setup_wandb_env() -> None:
    """W&B never prompts: offline by default, unless the user set WANDB_MODE."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


def build_loggers(cfg: DictConfig) -> list[Any]:
    setup_wandb_env()
    return [build(node, f"logger.{key}") for key, node in (cfg.get("logger") or {}).items()]


def build_callbacks(cfg: DictConfig) -> list[Any]:
    return [build(node, f"callbacks.{key}") for key, node in (cfg.get("callbacks") or {}).items()
            if node is not None]


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """A terminal table (rich) of ``rows``; floats shown with 4 decimals."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    Console().print(table)
