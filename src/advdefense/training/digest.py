"""Which config keys determine a model's trained weights: the run's config digest.

Every training checkpoint records it (``ckpt_path=last`` resumes only a run with the same
digest) and every registry entry too (``skip_if_registered=true`` skips a model registered with
the same digest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from advdefense.io import file_digest
from advdefense.registry import model_path

# data keys that say where or how the data is fetched, never which images are used
DATA_KEYS_IGNORED = ("root", "num_workers", "timeout", "mirrors", "sources", "checksums")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def config_digest(cfg: Mapping[str, Any]) -> str:
    """16 hex digits hashing everything that determines the trained weights.

    That is ``data``, ``model``, ``trainer`` and ``seed`` of the run config, without paths,
    loggers, names or how the data is fetched; for an ensemble (``model.members``), the SHA-256
    of each member's registry file instead of ``model.models_dir``, so a retrained member
    retrains the ensemble too.
    """
    keep = {k: _plain(cfg.get(k)) for k in ("data", "model", "trainer", "seed")}
    keep["trainer"].pop("default_root_dir", None)
    for k in DATA_KEYS_IGNORED:
        keep["data"].pop(k, None)
    if isinstance(keep["model"], dict) and keep["model"].get("members"):
        keep["model"].pop("models_dir", None)
        models_dir = cfg["paths"]["models_dir"]
        keep["member_files"] = {name: _file_digest(model_path(models_dir, name))
                                for name in keep["model"]["members"]}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str | None:
    return file_digest(path) if path.is_file() else None
