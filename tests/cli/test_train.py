"""train.py end to end with a tiny config: compose API and real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, TINY, TINY_MEMBER, compose

import advdefense
from advdefense.cli.train import train
from advdefense.registry import read_entry

pytestmark = pytest.mark.slow


def test_single_run_registers_a_member(tmp_path, data_dir, mnist67_test, caplog, capsys):
    cfg = compose("train", [*TINY_MEMBER, "preprocess=blur", "defense=fgsm"], tmp_path, data_dir)
    assert cfg.name == "blur-fgsm"
    with caplog.at_level("INFO"):
        metrics = train(cfg)
    assert metrics["test/acc"] > 0.9
    # output: the test metrics in one line, no Lightning tips, no table
    messages = [r.getMessage() for r in caplog.records]
    assert not any("Tip:" in m or "TPU available" in m for m in messages)
    assert any(m.startswith("blur-fgsm: test loss") and "confusion [[" in m for m in messages)
    assert "test/acc" not in capsys.readouterr().out
    path = tmp_path / "models" / "blur-fgsm.ckpt"
    entry = read_entry(path)
    assert entry["kind"] == "member" and entry["spec"]["preprocess"]["sigma"] == 2.0
    assert (tmp_path / "models" / "blur-fgsm.yaml").is_file()
    model = advdefense.load_model(path)
    x, y = mnist67_test
    acc = (model(x[:256]).argmax(1) == y[:256]).float().mean()
    assert acc > 0.9
    assert not model.training


def test_skip_if_registered_skips_only_an_identical_config(tmp_path, data_dir):
    cfg = compose("train", [*TINY_MEMBER, "defense=none"], tmp_path, data_dir)
    train(cfg)
    path = tmp_path / "models" / "none-none.ckpt"
    stamp = path.stat().st_mtime_ns
    again = compose("train", [*TINY_MEMBER, "defense=none", "skip_if_registered=true"], tmp_path, data_dir)
    train(again)
    assert path.stat().st_mtime_ns == stamp
    changed = compose("train", [*TINY_MEMBER, "defense=none", "skip_if_registered=true", "seed=1"],
                      tmp_path, data_dir)
    train(changed)
    assert path.stat().st_mtime_ns != stamp


def test_stacker_and_vote_over_registered_members(tmp_path, data_dir, mnist67_test):
    for defense in ("none", "fgsm"):
        train(compose("train", [*TINY_MEMBER, f"defense={defense}"], tmp_path, data_dir))
    members = "model.members=[none-none,none-fgsm]"
    metrics = train(compose("train", [*TINY, "model=stacker", members], tmp_path, data_dir))
    assert metrics["test/acc"] > 0.9
    train(compose("train", [*TINY, "model=vote", members], tmp_path, data_dir))
    x, y = mnist67_test
    for name in ("stacker", "vote"):
        model = advdefense.load_model(tmp_path / "models" / f"{name}.ckpt")
        assert (model(x[:200]).argmax(1) == y[:200]).float().mean() > 0.9


def test_missing_member_names_the_training_command(tmp_path, data_dir):
    cfg = compose("train", [*TINY, "model=stacker", "model.members=[squeeze-blackbox]"],
                  tmp_path, data_dir)
    with pytest.raises(Exception, match="python train.py preprocess=squeeze defense=blackbox"):
        train(cfg)


def _run(args: list[str], tmp_path, data_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, str(ROOT / "train.py"), *args, *TINY_MEMBER, f"paths.root_dir={tmp_path}",
           f"paths.data_dir={data_dir}"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_bad_config_value_fails_before_training(tmp_path, data_dir):
    proc = _run(["preprocess=blur", "preprocess.sigma=-1"], tmp_path, data_dir)
    assert proc.returncode != 0
    assert "preprocess.sigma=-1" in proc.stderr
    assert not (tmp_path / "models").exists()


def test_checkpoint_weights_load_without_pickle(tmp_path, data_dir):
    train(compose("train", [*TINY_MEMBER, "defense=none"], tmp_path, data_dir))
    payload = torch.load(tmp_path / "models" / "none-none.ckpt", weights_only=True)
    assert payload["format"] == "advdefense-model"


def test_failed_registry_write_names_the_checkpoint_and_a_command_that_registers_it(
        tmp_path, data_dir, monkeypatch):
    import shlex

    import advdefense.cli.train as cli_train
    from advdefense.registry import RegistryError

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    overrides = [*TINY_MEMBER, "defense=none", "data.train_subset=256"]
    monkeypatch.setattr(cli_train, "register_model", full_disk)
    with pytest.raises(RegistryError) as info:
        train(compose("train", overrides, tmp_path, data_dir))
    msg = str(info.value)
    checkpoints = tmp_path / "out" / "checkpoints"
    assert "No space left on device" in msg and f"survive in {checkpoints}" in msg
    command = msg.split("register them without training again: ")[1]
    assert command.startswith("python train.py ") and f"ckpt_path={checkpoints}/last.ckpt" in command
    assert not (tmp_path / "models" / "none-none.ckpt").exists()

    monkeypatch.undo()  # the folder is fixed: the printed command registers the same weights
    args = shlex.split(command)[2:]
    metrics = train(compose("train", args, tmp_path, data_dir))
    entry = read_entry(tmp_path / "models" / "none-none.ckpt")
    best = torch.load(checkpoints / "epoch_000.ckpt", weights_only=True)["state_dict"]
    for key, value in entry["state_dict"].items():
        assert torch.equal(best[f"model.{key}"], value), key
    assert entry["metrics"]["test/acc"] == metrics["test/acc"] > 0.8
    assert "val/acc" in entry["metrics"]


def test_two_identical_runs_at_once_both_finish(tmp_path, data_dir):
    env = {k: v for k, v in os.environ.items() if k != "ADVDEFENSE_RUN_ID"}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY_MEMBER, "defense=none",
           "data.train_subset=256", f"paths.root_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    runs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2, runs  # each its own folder
    for run in runs:
        rows = (run / "csv" / "metrics.csv").read_text().splitlines()
        assert rows.count(rows[0]) == 1 and len(set(rows)) == len(rows)  # not interleaved
        assert (run / "checkpoints" / "last.ckpt").is_file()
    models = tmp_path / "models"
    assert read_entry(models / "none-none.ckpt")["metrics"]["test/acc"] > 0.8
    assert read_entry(models / "none-none.prev.ckpt")["metrics"]["test/acc"] > 0.8
    assert sum("replacing the previous entry" in out for out in outs) == 1
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == [
        "none-none.ckpt", "none-none.prev.ckpt", "none-none.prev.yaml", "none-none.yaml"]
