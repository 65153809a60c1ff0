"""What an instantiated config builds, as plain data (for comparing configs before and after a
refactor of ``conf/``; used by tests/test_conf.py and to write tests/fixtures/conf_objects.json)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

# Public attributes that hold a constructor argument under another name.
DERIVED = ("shares",)


def init_params(cls: type) -> list[str]:
    """Names of the constructor parameters of ``cls`` and of every base class's constructor."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) \
                    and p.name not in names:
                names.append(p.name)
    return names


def describe(obj: Any) -> Any:
    """``obj`` as JSON-able data: an object becomes its class path plus the attributes that
    store its constructor arguments (recursively); containers and tensors become lists."""
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): describe(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    cls = type(obj)
    keys = [k for k in (*init_params(cls), *DERIVED) if hasattr(obj, k)]
    return {"class": f"{cls.__module__}.{cls.__qualname__}",
            **{k: describe(getattr(obj, k)) for k in sorted(set(keys))}}
