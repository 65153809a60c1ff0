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
    """The ``callbacks`` group's objects; ``trainer.enable_progress_bar=false`` drops the
    progress bar (Lightning refuses a progress-bar callback with the bar switched off)."""
    from pytorch_lightning.callbacks import ProgressBar

    callbacks = [build(node, f"callbacks.{key}") for key, node in (cfg.get("callbacks") or {}).items()
                 if node is not None]
    if (cfg.get("trainer") or {}).get("enable_progress_bar", True) is False:
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    return callbacks


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """A terminal table (rich) of ``rows``; floats shown with 4 decimals.

    Never cut: when the table is wider than the terminal (or than rich's 80 columns when the
    output is a file or a pipe), it is printed at its full width.
    """
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(str(col), no_wrap=True)
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    console = Console()
    width = console.measure(table, options=console.options.update_width(10_000)).maximum
    (Console(width=width) if width > console.width else console).print(table)


def print_metrics(name: str, metrics: dict[str, float]) -> None:
    """One log line of a trained model's test metrics (``test/acc`` ... ``test/cm_*``)."""
    test = {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}
    if not test:
        return
    cm = [int(test.pop(f"cm_{k}")) for k in ("tn", "fp", "fn", "tp") if f"cm_{k}" in test]
    text = ", ".join(f"{k} {v:.4f}" for k, v in test.items())
    if len(cm) == 4:
        text += f", confusion [[{cm[0]}, {cm[1]}], [{cm[2]}, {cm[3]}]] (rows true 6/7)"
    log.info("%s: test %s", name, text)


# Third-party messages a user of this project cannot act on: (logger, message prefix).
_QUIET_LOGS = (
    ("pytorch_lightning.utilities.rank_zero", "💡 Tip:"),          # litlogger / litmodels ads
    ("pytorch_lightning.utilities.rank_zero", "TPU available: False"),  # GPU line kept
)
# (message regex, category, module regex) of third-party warnings the user cannot act on.
_QUIET_WARNINGS = (
    # torch 2.13 deprecates LeafSpec; Lightning's own _pytree still uses it (fixed upstream).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
     r"pytorch_lightning\.utilities\._pytree"),
)


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_third_party() -> None:
    """Silence the third-party tips and deprecation warnings listed above, and only those.

    Idempotent; our own warnings and every other library message are left as they are.
    """
    import warnings

    for name, prefix in _QUIET_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefix) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropPrefix(prefix))
    for message, category, module in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
