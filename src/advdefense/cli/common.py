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
    """``instantiate`` with our own errors surfaced unwrapped (they name key and fix).

    Any other failure becomes one :class:`ConfigError` line naming ``what``, its ``_target_``
    and the innermost error, never a dump of the config node.
    """
    from advdefense.registry import RegistryError

    if node is None:
        return None
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause, innermost = exc.__cause__, exc
        while cause is not None:
            if isinstance(cause, ConfigError | FileNotFoundError | RegistryError):
                raise cause from None
            innermost, cause = cause, cause.__cause__
        first = (str(innermost).strip().splitlines() or [""])[0][:300]
        if innermost is exc:  # Hydra's own message: keep its first line, which names the error
            detail = first
        else:
            detail = f"{type(innermost).__name__}: {first}" if first else type(innermost).__name__
        target = node.get("_target_", "?") if OmegaConf.is_dict(node) else "?"
        raise ConfigError(what, f"<{target}>", f"could not be built ({detail}); check the "
                          f"{what}.* values on the command line") from exc


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
