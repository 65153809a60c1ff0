"""The model registry: every trained model is one self-contained file, ``<models_dir>/<name>.ckpt``.

A registry file is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading never unpickles arbitrary objects:

    {"format": "advdefense-model", "version": 1, "kind": "member" | "ensemble",
     "name": str, "spec": {...plain config...}, "state_dict": {...tensors...},
     "metrics": {...floats...}, "config": {...the resolved run config, for humans...}}

The model is rebuilt from ``spec`` with Hydra's ``instantiate``, restricted to classes of this
package (plain modules: :mod:`advdefense.models`, ``nets``, ``preprocess``, ``ensembles``,
``ablation``; never a LightningModule), then its weights are loaded strictly. A resolved YAML
config is written beside it. :func:`load_model` returns any entry ready to attack;
:func:`load_members` returns frozen members for a new ensemble.

:func:`register_model` is how training writes an entry: under an exclusive file lock
(``<models_dir>/.registry.lock``, so concurrent runs never interleave their writes), an entry it
replaces is kept as ``<name>.prev.ckpt`` (+ ``<name>.prev.yaml``), and it reports what it
replaced with both test accuracies. ``.prev`` files are not registry entries
(:func:`list_models` skips them); restore one with ``mv models/<name>.prev.ckpt
models/<name>.ckpt``.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advdefense.io import atomic_write_bytes, atomic_write_text
from advdefense.models import CheckedModel, member_pipeline

FORMAT, VERSION = "advdefense-model", 1
SUFFIX = ".ckpt"
PREV = ".prev"  # <name>.prev.ckpt: the entry that <name>.ckpt replaced
LOCK = ".registry.lock"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive format
TEXT_SUFFIXES = (".yaml", ".yml", ".json", ".txt", ".csv", ".md", ".log")


class RegistryError(RuntimeError):
    """A registry file is missing, corrupt, foreign or does not match its architecture."""


class MissingModels(RegistryError):
    """Entries asked for are not in the registry; ``missing`` names every one of them."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)


def _check_targets(spec: Any, where: str = "spec") -> None:
    """Only this package's classes may be instantiated from a registry file."""
    if isinstance(spec, dict):
        target = spec.get("_target_")
        if target is not None and not str(target).startswith("advdefense."):
            raise RegistryError(f"{where}._target_={target!r} is not an advdefense class; "
                                "refusing to instantiate it from a model file")
        for k, v in spec.items():
            _check_targets(v, f"{where}.{k}")
    elif isinstance(spec, list):
        for i, v in enumerate(spec):
            _check_targets(v, f"{where}[{i}]")


def build_from_spec(kind: str, spec: dict[str, Any]) -> nn.Module:
    """Rebuild an untrained model from its plain ``spec`` (see :func:`member_spec`)."""
    from hydra.utils import instantiate

    _check_targets(spec)
    if kind == "member":
        return member_pipeline(instantiate(spec["preprocess"]), instantiate(spec["net"]))
    if kind == "ensemble":
        from advdefense.ensembles import build_ensemble

        members = {n: build_from_spec("member", s) for n, s in spec["members"].items()}
        head = instantiate(spec["head"]) if spec.get("head") else None
        return build_ensemble(spec["combine"], members, head)
    raise RegistryError(f"unknown model kind {kind!r}; expected 'member' or 'ensemble'")


def save_model(path: str | Path, model: nn.Module, kind: str, name: str, spec: dict[str, Any],
               metrics: dict[str, float] | None = None, config: dict[str, Any] | None = None) -> Path:
    """Save ``model`` (built by ``build_from_spec(kind, spec)``) atomically; returns the path."""
    path = Path(path)
    build_from_spec(kind, spec).load_state_dict(model.state_dict())  # fail now, not at load time
    payload = {
        "format": FORMAT, "version": VERSION, "kind": kind, "name": name, "spec": spec,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "config": config or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def text_file_reason(path: str | Path) -> str | None:
    """What ``path`` is if it is a text file (a YAML config, a log...), not a torch archive; else None.

    Model files and Lightning checkpoints are zip archives written by ``torch.save``; a file that
    is not one and reads as UTF-8 text is something else the user passed by mistake (typically
    the ``<name>.yaml`` written beside each registry entry).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if not head or head.startswith(ZIP_MAGIC) or not _looks_like_text(head):
        return None
    if path.suffix.lower() in (".yaml", ".yml"):
        return "a YAML file (the resolved config written beside each model)"
    return "a text file, not a torch.save archive"


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 without control bytes other than tab / newline / carriage return."""
    if any(b < 9 or 13 < b < 32 for b in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample
        return exc.start >= len(head) - 3
    return True


def read_entry(path: str | Path) -> dict[str, Any]:
    """Read and validate a registry file without building the model."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"no model file at {path}; train it first (see README: 'python train.py')")
    reason = text_file_reason(path)
    if reason is not None:
        beside = path.with_suffix(SUFFIX)
        hint = (f"the model itself is {beside}" if beside != path and beside.is_file()
                else "pass a registry entry, models/<name>.ckpt")
        raise RegistryError(f"{path} is not a model file: it is {reason}; {hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle of foreign objects, random bytes...
        raise RegistryError(
            f"{path} is not a readable advdefense model file ({type(exc).__name__}: "
            f"{(str(exc).splitlines() or ['empty file'])[0][:200]}); it may be truncated or "
            "corrupt: retrain it") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RegistryError(f"{path} is not an advdefense model file (no '{FORMAT}' header); "
                            "Lightning training checkpoints are not registry entries: use models/<name>.ckpt")
    if payload.get("version") != VERSION:
        raise RegistryError(f"{path} has format version {payload.get('version')}, expected {VERSION}")
    return payload


def _rebuild(entry: dict[str, Any], path: str | Path) -> nn.Module:
    """The model of a read ``entry`` with its weights loaded strictly, in eval mode, on the CPU."""
    model = build_from_spec(entry["kind"], entry["spec"])
    try:
        model.load_state_dict(entry["state_dict"], strict=True)
    except RuntimeError as exc:
        raise RegistryError(f"{path}: weights do not fit the architecture in its spec: "
                            f"{str(exc).splitlines()[0]}") from exc
    return model.eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> CheckedModel:
    """Load any registry entry (member or ensemble) as a ready-to-attack ``nn.Module``.

    Returns a module in eval mode, preprocessing included, on ``device``, mapping images
    (N, 1, 28, 28) float in [0, 1] to (N, 2) logits (index 0 = digit 6, 1 = digit 7).
    Inputs of the wrong shape, dtype or range raise ``advdefense.checks.ImageError``.
    """
    entry = read_entry(path)
    return CheckedModel(_rebuild(entry, path), entry["name"], entry["kind"],
                        entry["spec"]).to(device).eval()


def load_members(models_dir: str | Path, names: list[str]
                 ) -> tuple[dict[str, nn.Module], dict[str, dict[str, Any]]]:
    """Frozen member pipelines (eval mode, no gradients) and their specs, by name, in order.

    Raises :class:`MissingModels` naming every absent member at once (before reading any),
    and :class:`RegistryError` for an entry that is not a member.
    """
    missing = [n for n in names if not model_path(models_dir, n).is_file()]
    if missing:
        what = (f"member '{missing[0]}' is" if len(missing) == 1
                else f"{len(missing)} of the {len(names)} members are")
        raise MissingModels(f"{what} not in the registry {models_dir}: {', '.join(missing)}; "
                            f"train {'it' if len(missing) == 1 else 'them'} first", missing)
    modules, specs = {}, {}
    for name in names:
        path = model_path(models_dir, name)
        entry = read_entry(path)
        if entry["kind"] != "member":
            raise RegistryError(f"{path} is not a member (kind {entry['kind']!r}); an ensemble "
                                "combines members only")
        modules[name] = _rebuild(entry, path).requires_grad_(False)
        specs[name] = entry["spec"]
    return modules, specs


def model_path(models_dir: str | Path, name: str) -> Path:
    """Where the model called ``name`` lives in the registry."""
    return Path(models_dir) / f"{name}{SUFFIX}"


def prev_path(path: str | Path) -> Path:
    """``<name>.prev.ckpt`` (or ``.prev.yaml``): where a replaced entry is kept."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREV}{path.suffix}")


def list_models(models_dir: str | Path) -> list[str]:
    """Names of all registry entries in ``models_dir``, sorted (replaced ``.prev`` files excluded)."""
    return sorted(p.stem for p in Path(models_dir).glob(f"*{SUFFIX}")
                  if not p.stem.endswith(PREV))


@contextmanager
def registry_lock(models_dir: str | Path) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``<models_dir>/.registry.lock`` (created if needed).

    Every registry write of :func:`register_model` happens under it, so two runs that finish at
    the same moment write one after the other (each leaves a complete entry, the earlier one
    as ``.prev``). Readers need no lock: each file is replaced atomically. POSIX only.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    lock = models_dir / LOCK
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lock
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _keep_as(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (a hard link where possible; ``src`` stays)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # no hard links on this filesystem
        shutil.copy2(src, tmp)
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def headline(metrics: dict[str, float] | None) -> str:
    """``test/acc 0.9960`` (or val/acc when no test was run, or ``no metrics``)."""
    for key in ("test/acc", "val/acc"):
        if metrics and key in metrics:
            return f"{key} {float(metrics[key]):.4f}"
    return "no metrics"


@dataclass
class Registered:
    """What :func:`register_model` did: the entry written and, if any, the entry it replaced."""

    path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    previous: Path | None = None  # the replaced entry, kept here (<name>.prev.ckpt)
    previous_metrics: dict[str, float] | None = None  # None: the old file was unreadable

    @property
    def worse(self) -> bool:
        """The new entry scores below the one it replaced (same metric, test/acc or val/acc)."""
        if not self.previous_metrics:
            return False
        for key in ("test/acc", "val/acc"):
            if key in self.metrics and key in self.previous_metrics:
                return float(self.metrics[key]) < float(self.previous_metrics[key])
        return False

    def message(self) -> str:
        """One line for the log: what was written, what it replaced, and where the old one is."""
        if self.previous is None:
            return f"registered {self.path} ({headline(self.metrics)})"
        old = (headline(self.previous_metrics) if self.previous_metrics is not None
               else "unreadable")
        text = (f"registered {self.path} ({headline(self.metrics)}), replacing the previous entry "
                f"({old}), kept as {self.previous}")
        if self.worse:
            text += " -- the NEW MODEL IS WORSE"
        return text + f"; to restore it: mv {self.previous} {self.path}"


def register_model(models_dir: str | Path, name: str, model: nn.Module, kind: str,
                   spec: dict[str, Any], metrics: dict[str, float] | None = None,
                   config: dict[str, Any] | None = None, yaml_text: str | None = None) -> Registered:
    """Write ``<models_dir>/<name>.ckpt`` (and ``<name>.yaml``) safely; returns what it did.

    Under :func:`registry_lock`: an existing entry is first kept as ``<name>.prev.ckpt`` (its
    YAML as ``<name>.prev.yaml``), replacing an older ``.prev``; then the new entry is written
    atomically (:func:`save_model`). A failure leaves the previous entry in place.
    """
    path = model_path(models_dir, name)
    with registry_lock(models_dir):
        previous, previous_metrics = None, None
        if path.is_file():
            try:
                previous_metrics = dict(read_entry(path)["metrics"])
            except RegistryError:
                previous_metrics = None
            previous = prev_path(path)
            _keep_as(path, previous)
            yaml = path.with_suffix(".yaml")
            if yaml.is_file():
                _keep_as(yaml, prev_path(yaml))
        save_model(path, model, kind, name, spec, metrics, config)
        if yaml_text is not None:
            atomic_write_text(path.with_suffix(".yaml"), yaml_text)
    return Registered(path, {k: float(v) for k, v in (metrics or {}).items()}, previous,
                      previous_metrics)
