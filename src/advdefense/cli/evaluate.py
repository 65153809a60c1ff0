"""Evaluate registry models under the attack grid (the only evaluation module that knows Hydra).

Turns ``cfg`` (conf/evaluate.yaml) into plain arguments for
:func:`advdefense.evaluation.pipeline.evaluate_models`, then writes the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from advdefense.checks import ConfigError, check_choice
from advdefense.cli.common import build, log, plain, print_table, quiet_third_party, setup_wandb_env
from advdefense.ensembles import member_names
from advdefense.evaluation import settings
from advdefense.evaluation.budget import Budget
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.certified import certify_models, write_certified
from advdefense.evaluation.grid import MissingSurrogateError
from advdefense.evaluation.pipeline import evaluate_models
from advdefense.evaluation.settings import resolve_device
from advdefense.evaluation.threats import THREATS, AttackSpec, EvalModel
from advdefense.io import file_digest
from advdefense.registry import list_models, load_model, model_path
from advdefense.sampling import stratified_sample

TRAIN_SURROGATE = "python train.py preprocess=none defense=none"


def _device(cfg: DictConfig) -> torch.device:
    return resolve_device(cfg.eval.get("device", "cpu"))


def attack_budget(cfg: DictConfig, n: int) -> dict[str, int]:
    """``eval.attack_n`` (``eval.attack_n_cuda`` on a CUDA device) for ``n`` evaluated images:
    see :func:`advdefense.evaluation.settings.attack_budget`."""
    return settings.attack_budget(cfg.eval, n, _device(cfg))


def time_budget(cfg: DictConfig, n: int, specs: list[AttackSpec] | None = None) -> Budget:
    """:func:`attack_budget` and the ``eval.full_n`` rule (rows that ignore it for the goal model
    of ``eval.experiment`` by default; :mod:`advdefense.evaluation.budget`). ``specs``: the
    built attacks (built here when not given); their method and threat model pick the rows."""
    from advdefense.report import experiment_goals

    specs = attack_specs(cfg) if specs is None else specs
    rule = settings.full_n_settings(cfg.eval, experiment_goals(cfg.eval.get("experiment")),
                                    {s.name: s.attack for s in specs})
    return Budget(attack_budget(cfg, n), rule)


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


def eval_settings(cfg: DictConfig, out_dir: Path, cache: CellCache,
                  surrogate: EvalModel | None, n: int, meta: dict[str, Any] | None = None,
                  specs: list[AttackSpec] | None = None) -> settings.EvalSettings:
    """The run's :class:`~advdefense.evaluation.settings.EvalSettings` from ``cfg.eval``."""
    budget = time_budget(cfg, n, specs)
    return settings.EvalSettings(
        out_dir, cache, list(cfg.eval.threats), surrogate,
        settings.sweep_config(cfg.eval.get("sweep"), cfg.eval.get("attacks") or {}, build),
        settings.sanity_config(cfg.eval.sanity), dict(budget.attack_n),
        int(cfg.get("seed", 0)), bool(cfg.eval.progress), meta or {}, budget.full_n)


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
    specs = attack_specs(cfg)
    result = evaluate_models(models, specs, images, labels, eval_settings(
        cfg, out_dir, cache, surrogate, len(labels),
        meta={"name": cfg.name, "experiment": cfg.eval.get("experiment"),
              "models_dir": str(cfg.paths.models_dir), "ckpt": cfg.get("ckpt"),
              "kinds": {m.name: getattr(m.module, "kind", "member") for m in models},
              "members": members}, specs=specs))
    certified = run_certification(cfg, models, images, labels, cache, out_dir)
    if certified:
        result["certified"] = certified
    from advdefense.report import write_report

    report = write_report(out_dir, models_dir=cfg.paths.models_dir,
                          plot_cache=Path(cfg.eval.cache_dir) / "plots" if cfg.eval.cache else None)
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


def run_certification(cfg: DictConfig, models: list[EvalModel], images: torch.Tensor,
                      labels: torch.Tensor, cache: CellCache, out_dir: Path) -> list[dict[str, Any]]:
    """Certify the randomized-ablation models among ``models``; writes ``certified.json``."""
    config = settings.certify_config(cfg.eval.get("certify"))
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
