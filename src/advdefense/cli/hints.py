"""A command-line key that does not exist gets one line naming the key that does.

Hydra answers ``python train.py defense.eps=0.2`` with "Could not override 'defense.eps'. To
append to your config use +defense.eps=0.2" and OmegaConf's node details, which leads users to
add a key nothing reads. :func:`install_override_hints` wraps the step of Hydra's config loader
that applies overrides, so that such an error becomes::

    invalid config key defense.eps=0.2: no such key; did you mean defense.attack.eps=0.2?
    (keys under defense: _target_, attack, ...)

Hydra has no public hook for this: the wrapper is installed only if the private static method
is where Hydra 1.3 keeps it, and otherwise Hydra's own message stands.
"""

from __future__ import annotations

import difflib
from typing import Any

_MARK = "_advdefense_hints"


def suggest_keys(cfg: Any, key: str, limit: int = 3) -> list[str]:
    """Full keys of ``cfg`` that ``key`` (absent) probably meant, best first.

    Keys ending in the same last name (``defense.eps`` -> ``defense.attack.eps``), those under
    the same first name first; else close spellings of the whole key.
    """
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    paths = [p for p in _paths(tree) if not p.startswith("hydra.") or key.startswith("hydra.")]
    leaf, head = key.rsplit(".", 1)[-1], key.split(".", 1)[0]
    same_leaf = [p for p in paths if p.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        same_leaf.sort(key=lambda p: (p.split(".", 1)[0] != head, p.count("."), p))
        return same_leaf[:limit]
    return difflib.get_close_matches(key, paths, n=limit, cutoff=0.75)


def _paths(tree: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            path = f"{prefix}{k}"
            out.append(path)
            out.extend(_paths(v, f"{path}."))
    return out


def unknown_key_message(cfg: Any, key: str, value_text: str) -> str:
    """The one-line error for an override of ``key`` that ``cfg`` does not have."""
    from omegaconf import OmegaConf

    hints = suggest_keys(cfg, key)
    text = f"invalid config key {key}={value_text}: no such key"
    if hints:
        text += "; did you mean " + " or ".join(f"{h}={value_text}" for h in hints) + "?"
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
    if OmegaConf.is_dict(node):
        keys = [str(k) for k in node.keys() if str(k) != "hydra"]
        shown = ", ".join(keys[:20]) + (", ..." if len(keys) > 20 else "")
        text += f" (keys under {parent or 'the top level'}: {shown})"
    return text + "; to add a new key on purpose, prefix it with +"


def install_override_hints() -> bool:
    """Make Hydra's "Could not override" errors name the key that exists; True if installed."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.errors import ConfigCompositionException
    except ImportError:
        return False
    original = ConfigLoaderImpl.__dict__.get("_apply_overrides_to_config")
    if not isinstance(original, staticmethod) or getattr(original.__func__, _MARK, False):
        return False
    apply = original.__func__

    def apply_overrides(overrides: list[Any], cfg: Any) -> None:
        try:
            apply(overrides, cfg)
        except ConfigCompositionException as exc:
            if not str(exc).startswith("Could not override"):
                raise
            for override in overrides:
                if override.is_delete() or override.is_add() or override.is_force_add():
                    continue
                from omegaconf import OmegaConf

                key = override.key_or_group
                parent = key.rsplit(".", 1)[0] if "." in key else ""
                node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
                if not OmegaConf.is_dict(node) or key.rsplit(".", 1)[-1] in node:
                    continue
                value = (override.input_line or "").split("=", 1)[-1]
                raise ConfigCompositionException(unknown_key_message(cfg, key, value)) from None
            raise

    setattr(apply_overrides, _MARK, True)
    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(apply_overrides)
    return True
