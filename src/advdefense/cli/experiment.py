"""One command for a whole experiment: train the members, the ensembles, then evaluate.

Each stage is the same job its own command runs (``train.py preprocess=.. defense=..``,
``train.py model=stacker``, ``evaluate.py``): the stage's config is composed from ``conf/``
with the experiment's overrides, and models already in the registry with the same config are
skipped, so a rerun after a crash continues where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from advdefense.cli.common import log


@contextlib.contextmanager
def stage_config(config_name: str, overrides: list[str], output_dir: Path) -> Iterator[DictConfig]:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` as the current Hydra job."""
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    hydra_config.set_config(cfg)
    try:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            del cfg.hydra
        output_dir.mkdir(parents=True, exist_ok=True)
        yield cfg
    finally:
        hydra_config.cfg = previous


def _paths(cfg: DictConfig) -> list[str]:
    return [f"paths.{k}={v}" for k, v in cfg.paths.items() if k != "output_dir"]


def _trainer() -> list[str]:
    """The experiment's own ``trainer=`` choice (e.g. ``trainer=gpu``), passed to every stage."""
    choice = HydraConfig.get().runtime.choices.get("trainer")
    return [f"trainer={choice}"] if choice and choice != "default" else []


# What a user may add to an experiment command besides its own keys: every training stage gets
# these after the pipeline's own overrides (so they win), and data.test_subset also sizes the
# evaluation (eval.n):
#   python train.py experiment=paper_quick trainer.max_epochs=1 data.train_subset=256 data.test_subset=40
SIZE_KNOBS = ("data.train_subset", "data.val_size", "data.test_subset", "data.batch_size")
FORWARDED_PREFIXES = ("trainer.",)  # any trainer setting (the trainer=... choice is _trainer())
# Evaluation-only knobs: where the evaluation runs (on CUDA every attack row covers all n,
# eval.attack_n_cuda):  python train.py experiment=robust trainer=gpu eval.device=cuda
EVAL_KNOBS = ("eval.device",)
# Command-line keys the experiment itself reads.
_OWN_KEYS = ("experiment", "trainer", "seed", "name", "task_name", "pipeline", "paths", "hydra")


def size_knobs() -> list[str]:
    """The command line's size knobs and ``trainer.*`` settings, for every training stage.

    Any other override of an experiment command would not reach its stages: it is refused,
    naming the keys that would carry it, instead of being silently ignored.
    """
    from advdefense.checks import ConfigError

    knobs = []
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if key in SIZE_KNOBS or key in EVAL_KNOBS or key.startswith(FORWARDED_PREFIXES):
            knobs.append(f"{key}={value}")
        elif key.split(".")[0] not in _OWN_KEYS:
            raise ConfigError(key, value,
                              "an experiment passes only trainer.*, eval.device and its size knobs "
                              f"({', '.join(SIZE_KNOBS)}) to its stages; put other overrides in "
                              "pipeline.member_overrides, pipeline.ensemble_overrides or "
                              "pipeline.evaluate_overrides")
    return knobs


def _eval_knobs(knobs: list[str]) -> list[str]:
    """``data.test_subset=K`` sizes the evaluation stage too (``eval.n=K``); ``eval.*`` knobs
    go to the evaluation stage only."""
    return ([f"eval.n={k.split('=', 1)[1]}" for k in knobs if k.startswith("data.test_subset=")]
            + [k for k in knobs if k.startswith("eval.")])


def _train_knobs(knobs: list[str]) -> list[str]:
    return [k for k in knobs if not k.startswith("eval.")]


def member_name(member: Any) -> str:
    """A pipeline member's registry name: its ``name``, else ``<preprocess>-<defense>``."""
    return str(member.get("name") or f"{member['preprocess']}-{member['defense']}")


def member_overrides(cfg: DictConfig, member: Any, knobs: Sequence[str] = ()) -> list[str]:
    """``preprocess=X defense=Y name=<member_name>``, the experiment's member overrides, then
    the member's own ``overrides``, then the command line's size knobs (later ones win)."""
    preprocess, defense = member["preprocess"], member["defense"]
    return [f"preprocess={preprocess}", f"defense={defense}", f"name={member_name(member)}",
            f"seed={cfg.seed}", "skip_if_registered=true", *_paths(cfg), *_trainer(),
            *cfg.pipeline.get("member_overrides", []), *member.get("overrides", []), *knobs]


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.pipeline``: members, ensembles, evaluation; returns timings and metrics."""
    from advdefense.cli.train import train

    pipe, out = cfg.pipeline, Path(cfg.paths.output_dir)
    timings: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"members": {}, "ensembles": {}}
    knobs = size_knobs()  # refuses, before any work, overrides that would not reach a stage

    def timed(stage: str, fn, *args) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        timings.append({"stage": stage, "seconds": round(time.perf_counter() - start, 1)})
        return result

    for member in pipe.get("members", []):
        name = member_name(member)
        with stage_config("train", member_overrides(cfg, member, _train_knobs(knobs)),
                          out / "members" / name) as sub:
            summary["members"][name] = timed(f"member {name}", train, sub)
    for ensemble in pipe.get("ensembles", []):
        overrides = [f"model={ensemble}", f"seed={cfg.seed}", "skip_if_registered=true",
                     *_paths(cfg), *_trainer(), *pipe.get("ensemble_overrides", []),
                     *_train_knobs(knobs)]
        with stage_config("train", overrides, out / "ensembles" / ensemble) as sub:
            summary["ensembles"][ensemble] = timed(f"ensemble {ensemble}", train, sub)
    if pipe.get("evaluate"):
        from advdefense.cli.evaluate import evaluate

        # eval.experiment: the report judges this experiment's goals (if it has any)
        overrides = [f"seed={cfg.seed}", f"eval.experiment={cfg.name}", *_paths(cfg),
                     *pipe.get("evaluate_overrides", []), *_eval_knobs(knobs)]
        with stage_config("evaluate", overrides, out / "evaluation") as sub:
            summary["evaluation"] = timed("evaluation", evaluate, sub)  # prints the report path
    log.info("%s: %s (each stage in %s)", cfg.name, stage_times(timings), out / "experiment.json")
    summary["timings"] = timings
    _write_summary(out / "experiment.json", summary, timings)
    return summary


def stage_times(timings: list[dict[str, Any]]) -> str:
    """``members 23 s (6), ensembles 5 s (3), evaluation 105 s, total 133 s``."""
    groups: dict[str, list[float]] = {}
    for t in timings:
        groups.setdefault(t["stage"].split(" ")[0], []).append(t["seconds"])
    parts = [f"{name}s" if len(v) > 1 else name for name, v in groups.items()]
    text = ", ".join(f"{p} {sum(v):.0f} s" + (f" ({len(v)})" if len(v) > 1 else "")
                     for p, v in zip(parts, groups.values(), strict=True))
    return f"{text}, total {sum(t['seconds'] for t in timings):.0f} s"


def _write_summary(path: Path, summary: dict[str, Any], timings: list[dict[str, Any]]) -> None:
    import json

    from advdefense.io import atomic_write_text

    plain = {"timings": timings, "members": summary["members"], "ensembles": summary["ensembles"]}
    atomic_write_text(path, json.dumps(plain, indent=2, default=str))


def is_experiment(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "pipeline") is not None
