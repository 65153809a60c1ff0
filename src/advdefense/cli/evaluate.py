"""Evaluate registry models under the attack grid (the only evaluation module that knows Hydra).

Turns ``cfg`` (conf/evaluate.yaml) into plain arguments for
:func:`advdefense.evaluation.pipeline.evaluate_models`, then writes the report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from advdefense.checks import ConfigError, check_choice
from advdefense.cli.common import build, log, plain, print_table, quiet_third_party, setup_wandb_env
from advdefense.ensembles import member_names
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.certified import CertifyConfig, certify_models, write_certified
from advdefense.evaluation.grid import MissingSurrogateError
from advdefense.evaluation.masking import SqueezeSurrogate
from advdefense.evaluation.pipeline import SanityConfig, SweepConfig, evaluate_models
from advdefense.evaluation.threats import THREATS, AttackSpec, EvalModel
from advdefense.io import file_digest
from advdefense.registry import list_models, load_model, model_path
from advdefense.sampling import stratified_sample

TRAIN_SURROGATE = "python train.py preprocess=none defense=none"


def resolve_device(value: str | None) -> torch.device:
    """``eval.device``: ``auto`` (CUDA when there is one, else CPU), ``cpu``, ``cuda``, ``cuda:N``."""
    value = "auto" if value in (None, "") else str(value)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError as exc:
        raise ConfigError("eval.device", value, "auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (device.index or 0) >= count:
            raise ConfigError("eval.device", value,
                              f"a device that is there: this machine has {count} CUDA device(s); "
                              "use eval.device=cpu or auto")
    elif device.type != "cpu":
        raise ConfigError("eval.device", value, "auto, cpu, cuda or cuda:N")
    return device


def _device(cfg: DictConfig) -> torch.device:
    return resolve_device(cfg.eval.get("device", "cpu"))


def _load(name: str, path: Path, device: torch.device | str = "cpu") -> EvalModel:
    return EvalModel(name, load_model(path, device), file_digest(path))


def load_models(cfg: DictConfig) -> list[EvalModel]:
    """``ckpt=<file>``, else ``eval.models`` (names), else every registry entry."""
    if cfg.get("ckpt"):
        path = Path(cfg.ckpt)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt={cfg.ckpt}: no such model file")
        return [_load(path.stem, path, _device(cfg))]
    models_dir = Path(cfg.paths.models_dir)
    names = list(cfg.eval.models) if cfg.eval.get("models") else list_models(models_dir)
    if not names:
        raise FileNotFoundError(
            f"no models in {models_dir}; train them first, e.g. "
            "python train.py -m preprocess=none,blur,squeeze defense=fgsm,blackbox")
    missing = [n for n in names if not model_path(models_dir, n).is_file()]
    if missing:
        raise FileNotFoundError(f"eval.models names {missing}, not in {models_dir}; "
                                f"available: {list_models(models_dir)}")
    return [_load(n, model_path(models_dir, n), _device(cfg)) for n in names]


def load_surrogate(cfg: DictConfig, threats: list[str]) -> EvalModel | None:
    """The transfer surrogate named by ``eval.surrogate``; a clear error if it is missing."""
    if "transfer" not in threats:
        return None
    name = cfg.eval.surrogate
    path = model_path(cfg.paths.models_dir, name)
    if not path.is_file():
        raise MissingSurrogateError(
            f"the transfer threat model crafts its attacks on the surrogate '{name}', but "
            f"{path} does not exist. Train it with `{TRAIN_SURROGATE}`, or leave transfer out: "
            "eval.threats=[whitebox,blackbox]")
    return _load(name, path, _device(cfg))


def attack_specs(cfg: DictConfig) -> list[AttackSpec]:
    """The configured attacks (``eval.attacks.<name>`` nodes with a ``_target_``)."""
    specs = []
    where = cfg.eval.get("attack_threats") or {}
    only = cfg.eval.get("only_attacks")
    for name, node in (cfg.eval.get("attacks") or {}).items():
        if node is None or (only is not None and name not in only):
            continue
        if "_target_" not in node:
            log.warning("eval.attacks.%s has no _target_ (is conf/attack/ missing it?): skipped",
                        name)
            continue
        threats = tuple(where.get(name, ["transfer", "whitebox"]))
        for t in threats:
            check_choice(f"eval.attack_threats.{name}", t, THREATS)
        specs.append(AttackSpec(str(name), build(node, f"eval.attacks.{name}"), plain(node), threats))
    return specs


def attack_budget(cfg: DictConfig, n: int) -> dict[str, int]:
    """``eval.attack_n``: attack row -> most images it is crafted on per model (None = all).

    An integer >= 1 is a count; a number in (0, 1) a fraction of the ``n`` evaluated images
    (rounded up), so quick mode (``eval.n=200``) scales the budget down with n. On a CUDA
    device ``eval.attack_n_cuda`` replaces it (null: every row on all n).
    """
    key = "attack_n_cuda" if _device(cfg).type == "cuda" else "attack_n"
    out = {}
    for name, k in (cfg.eval.get(key) or {}).items():
        if k is None:
            continue
        if isinstance(k, float) and 0 < k < 1:
            k = max(1, math.ceil(k * n))
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"eval.{key}.{name}", k,
                              "a positive integer, a fraction in (0, 1) of eval.n, or null for all")
        out[str(name)] = int(k)
    return out


def convergence_n(value: Any) -> int:
    """``eval.sanity.convergence_n``: images per convergence run, an integer >= 0 (0 = off)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError("eval.sanity.convergence_n", value, "an integer >= 0 (0 = no check)")
    return int(value)


def sweep_n(value: Any, min_n: Any = 0) -> tuple[int | float, int]:
    """``eval.sweep.n``: an image count (int >= 1) or a fraction in (0, 1) of the evaluated n."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or (
            isinstance(value, float) and value >= 1):
        raise ConfigError("eval.sweep.n", value,
                          "a positive integer (images) or a fraction in (0, 1) of eval.n")
    if isinstance(min_n, bool) or not isinstance(min_n, int) or min_n < 0:
        raise ConfigError("eval.sweep.min_n", min_n, "an integer >= 0")
    return (value if isinstance(value, int) else float(value)), int(min_n)


def sweep_config(cfg: DictConfig) -> SweepConfig | None:
    """eps-sweep factories built from the grid's own FGSM / PGD nodes with eps overridden."""
    s = cfg.eval.get("sweep")
    if not s or not s.get("enabled", True):
        return None
    factories: dict[str, Any] = {}
    attacks = cfg.eval.get("attacks") or {}
    ratio = s.get("alpha_ratio")
    for name in s.attacks:
        node = attacks.get(name)
        if node is None or "_target_" not in node:
            continue
        extra = dict(s.get("overrides", {}).get(name) or {})

        def make(eps: float, node: DictConfig = node, extra: dict = extra, name: str = name) -> Any:
            kw = dict(extra)
            if name == "pgd" and ratio:
                kw["alpha"] = max(eps * float(ratio), 1e-3)
            return build(node, f"eval.attacks.{name}", eps=eps, **kw)

        factories[name] = (make, plain(node) | {"sweep": extra, "alpha_ratio": ratio})
    n, min_n = sweep_n(s.n, s.get("min_n", 0))
    return SweepConfig(n=n, min_n=min_n, eps=list(s.eps), threats=list(s.threats), factories=factories,
                       angles=list(s.angles), shifts=list(s.shifts), gradient_n=int(s.gradient_n))


def sanity_config(cfg: DictConfig) -> SanityConfig:
    """``eval.sanity``: tolerances and the gradient variants of white-box PGD."""
    s = cfg.eval.sanity
    surrogates = []
    for i, node in enumerate(s.get("squeeze_surrogates") or []):
        key = f"eval.sanity.squeeze_surrogates[{i}]"
        if not isinstance(node, DictConfig) or set(node) - {"median", "temperature"}:
            raise ConfigError(key, plain(node) if isinstance(node, DictConfig) else node,
                              "a mapping with keys median (mean or exact) and temperature "
                              "(> 0, or null for straight-through)")
        try:
            surrogates.append(SqueezeSurrogate(node.get("median", "mean"), node.get("temperature")))
        except ConfigError as exc:
            raise ConfigError(key, plain(node), f"{exc.key}={exc.value!r}: {exc.allowed}") from exc
    vote = s.get("vote_members", True)
    if not isinstance(vote, bool):
        raise ConfigError("eval.sanity.vote_members", vote, "true or false")
    return SanityConfig(float(s.tol), float(s.eps1_max_acc), float(s.max_zero_grad),
                        convergence_n(s.get("convergence_n", 0)), tuple(surrogates), vote)


def _data(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from advdefense.data import load_mnist67

    images, labels = load_mnist67("test", root=cfg.eval.get("data_root"))
    idx = stratified_sample(labels, cfg.eval.get("n"), int(cfg.get("seed", 0)))
    device = _device(cfg)
    return images[idx].to(device), labels[idx].to(device)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured evaluation; returns the pipeline's result dict."""
    quiet_third_party()
    threats = list(cfg.eval.threats)
    for t in threats:
        check_choice("eval.threats", t, THREATS)
    _device(cfg)  # a device that is not there fails before any work
    n = cfg.eval.get("n")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ConfigError("eval.n", n, "a positive integer, or null for all 1,986 test images")
    models = load_models(cfg)
    surrogate = load_surrogate(cfg, threats)
    images, labels = _data(cfg)
    out_dir = Path(cfg.paths.output_dir)
    cache = CellCache(cfg.eval.cache_dir, enabled=bool(cfg.eval.cache))
    members = {m.name: names for m in models if (names := member_names(m.module))}
    result = evaluate_models(
        models, attack_specs(cfg), images, labels, threats, surrogate, cache, out_dir,
        sweep_config(cfg), sanity_config(cfg),
        seed=int(cfg.get("seed", 0)), progress=bool(cfg.eval.progress),
        meta={"name": cfg.name, "experiment": cfg.eval.get("experiment"),
              "models_dir": str(cfg.paths.models_dir), "ckpt": cfg.get("ckpt"),
              "kinds": {m.name: getattr(m.module, "kind", "member") for m in models},
              "members": members},
        attack_n=attack_budget(cfg, len(labels)))
    certified = run_certification(cfg, models, images, labels, cache, out_dir)
    if certified:
        result["certified"] = certified
    from advdefense.report import write_report

    report = write_report(out_dir, models_dir=cfg.paths.models_dir)
    summary(result["rows"], cfg.eval.get("experiment"))
    log.info("report: %s; every row: %s (cache hits %d)", report, out_dir / "results.csv",
             cache.hits)
    if "wandb" in (cfg.get("logger") or {}):
        _log_wandb(cfg, out_dir, result["rows"])
    return result


def summary(rows: list[dict[str, Any]], experiment: str | None = None) -> None:
    """The console summary: models x headline attacks (full names), and the goals' verdicts."""
    from advdefense.report import goals_summary, headline_table

    header, body = headline_table(rows)
    n = max((r["n"] for r in rows if r["attack"] == "none"), default=0)
    print_table(f"accuracy on n={n} test images (⚠ = flagged by a sanity check; every row in "
                "results.csv)", [dict(zip(header, line, strict=True)) for line in body])
    if (goals := goals_summary(rows, experiment)) is not None:
        log.info(goals)


def certify_config(cfg: DictConfig) -> CertifyConfig | None:
    """``eval.certify`` as plain settings (None when disabled), each value checked."""
    c = cfg.eval.get("certify")
    if not c or not c.get("enabled", True):
        return None
    for key in ("n0", "n", "batch_size"):
        v = c.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"eval.certify.{key}", v, "a positive integer")
    alpha = c.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ConfigError("eval.certify.alpha", alpha, "a number in (0, 1)")
    r = c.get("max_radius")
    if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < 784:
        raise ConfigError("eval.certify.max_radius", r, "an integer in [0, 783]")
    images = c.get("images")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 1):
        raise ConfigError("eval.certify.images", images,
                          "a positive integer (stratified subset), or null for every evaluated image")
    return CertifyConfig(int(c.n0), int(c.n), float(alpha), int(c.batch_size), int(r), images)


def run_certification(cfg: DictConfig, models: list[EvalModel], images: torch.Tensor,
                      labels: torch.Tensor, cache: CellCache, out_dir: Path) -> list[dict[str, Any]]:
    """Certify the randomized-ablation models among ``models``; writes ``certified.json``."""
    config = certify_config(cfg)
    if config is None:
        return []
    records = certify_models(models, images, labels, config, cache, int(cfg.get("seed", 0)),
                             bool(cfg.eval.progress))
    if records:
        write_certified(out_dir, records)
    return records


def _log_wandb(cfg: DictConfig, out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """The grid as a W&B table, the plots as images (offline unless WANDB_MODE says otherwise)."""
    setup_wandb_env()
    import wandb

    node = cfg.logger.wandb
    run = wandb.init(project=node.get("project", "advdefense"), name=str(cfg.name),
                     job_type="evaluate", dir=str(out_dir),
                     config=OmegaConf.to_container(cfg.eval, resolve=True))
    try:
        cols = [c for c in rows[0] if c not in ("confusion", "flags")] + ["confusion", "flags"]
        table = wandb.Table(columns=cols, data=[[str(r[c]) if c in ("confusion", "flags") else r[c]
                                                 for c in cols] for r in rows])
        run.log({"grid": table})
        for png in sorted(out_dir.glob("plots/*.png")):
            run.log({f"plots/{png.stem}": wandb.Image(str(png))})
    finally:
        run.finish()
