"""Scale out: launchers, CPU DDP, seed sweeps without name collisions, failing multirun jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, TINY_MEMBER, compose
from omegaconf import OmegaConf

from advdefense.registry import read_entry

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
       "HYDRA_FULL_ERROR": "1"}


def _train_py(args: list[str], tmp_path, data_dir, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), *args, f"paths.root_dir={tmp_path}",
           f"paths.data_dir={data_dir}"]
    return subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


# ----------------------------------------------------------------------------- launchers

def test_slurm_launcher_composes_into_its_config_class(tmp_path, data_dir):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.utils import get_class

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[
            "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30"],
            return_hydra_config=True)
    node = cfg.hydra.launcher
    conf_cls = OmegaConf.get_type(node)  # composed onto the plugin's own dataclass
    assert conf_cls.__name__ == "SlurmQueueConf"
    typed = conf_cls(**OmegaConf.to_container(node, resolve=False))  # every knob is a field
    assert typed.partition == "gpu" and typed.timeout_min == 30 and typed.gpus_per_node == 1
    with pytest.raises(Exception, match="timeout_min"):  # knobs are type-checked
        OmegaConf.merge(node, {"timeout_min": "soon"})
    launcher_cls = get_class(node._target_)
    assert launcher_cls.__name__ == "SlurmLauncher"


def test_joblib_launcher_is_selectable(tmp_path, data_dir):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.utils import get_class

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                            return_hydra_config=True)
    assert cfg.hydra.launcher.n_jobs == 2
    assert get_class(cfg.hydra.launcher._target_).__name__ == "JoblibLauncher"


@pytest.mark.parametrize("trainer", ["ddp", "ddp_cpu", "gpu"])
def test_trainer_configs_compose(trainer, tmp_path, data_dir):
    cfg = compose("train", [f"trainer={trainer}"], tmp_path, data_dir)
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer.startswith("ddp"):
        assert cfg.trainer.strategy == "ddp"


# ----------------------------------------------------------------------------- seeds

def test_seed_suffix_names_members_apart(tmp_path, data_dir):
    cfg = compose("train", ["seed=3", "seed_suffix=-s${seed}", "defense=none"], tmp_path, data_dir)
    assert cfg.name == "none-none-s3"
    assert compose("train", ["defense=none"], tmp_path, data_dir).name == "none-none"


@pytest.mark.slow
def test_seed_sweep_in_parallel_registers_one_model_per_seed(tmp_path, data_dir):
    proc = _train_py(["-m", "seed=1,2", "seed_suffix=-s${seed}", "defense=none", *TINY_MEMBER,
                      "test=false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                     tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.stem for p in (tmp_path / "models").glob("*.ckpt"))
    assert names == ["none-none-s1", "none-none-s2"]
    seeds = {n: read_entry(tmp_path / "models" / f"{n}.ckpt")["config"]["run"]["seed"] for n in names}
    assert seeds == {"none-none-s1": 1, "none-none-s2": 2}


# ----------------------------------------------------------------------------- failures

@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path, data_dir):
    # job 1 fails at run time (Adam rejects a negative weight decay when fit starts)
    proc = _train_py(["-m", "model.optimizer.weight_decay=0.0,-1.0", "defense=none",
                      *TINY_MEMBER, "test=false"], tmp_path, data_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep reports its failure
    assert (tmp_path / "models" / "none-none.ckpt").is_file()  # job 0 still registered
    (failed,) = list((tmp_path / "logs").rglob("failed.json"))
    record = json.loads(failed.read_text())
    assert record["job"] == 1 and "model.optimizer.weight_decay=-1.0" in record["overrides"]
    assert "weight_decay" in record["error"] and "Traceback" in record["traceback"]
    assert failed.parent.name == "1_none-none"
    (summary,) = list((tmp_path / "logs").rglob("failed_jobs.json"))
    assert json.loads(summary.read_text())[0]["overrides"] == record["overrides"]
    out = proc.stdout + proc.stderr
    assert "1 failed job(s)" in out and "model.optimizer.weight_decay=-1.0" in out
    # the job that worked kept its checkpoints
    assert list((tmp_path / "logs").rglob("0_none-none/checkpoints/last.ckpt"))


@pytest.mark.slow
def test_continue_on_error_false_leaves_failures_to_hydra(tmp_path, data_dir):
    proc = _train_py(["-m", "model.optimizer.weight_decay=-1.0", "defense=none",
                      *TINY_MEMBER, "continue_on_error=false"], tmp_path, data_dir)
    assert proc.returncode != 0
    assert "Invalid weight_decay value: -1.0" in proc.stderr
    assert not list(tmp_path.rglob("failed.json"))


# ----------------------------------------------------------------------------- DDP

@pytest.mark.slow
def test_cpu_ddp_matches_one_process(tmp_path, data_dir):
    from advdefense.cli.train import train

    single = train(compose("train", [*TINY_MEMBER, "defense=none", "name=single"],
                           tmp_path / "single", data_dir))
    proc = _train_py([*TINY_MEMBER, "defense=none", "trainer=ddp_cpu", "name=ddp"],
                     tmp_path, data_dir, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("registered ") == 1  # rank zero only
    assert "MEMBER: 2/2" in out  # two processes really ran
    entry = read_entry(tmp_path / "models" / "ddp.ckpt")
    # test metrics are synced over both processes: confusion counts cover all 128 test images
    cm = sum(entry["metrics"][f"test/cm_{k}"] for k in ("tn", "fp", "fn", "tp"))
    assert cm == 128
    assert abs(entry["metrics"]["test/acc"] - single["test/acc"]) <= 0.05
    assert entry["metrics"]["test/acc"] > 0.9
