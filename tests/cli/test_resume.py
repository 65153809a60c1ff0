"""Never lose work: a run killed mid-epoch resumes with ckpt_path=last and ends bit-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_MEMBER, compose

from advdefense.checks import ConfigError
from advdefense.cli.train import _resume_path, train
from advdefense.registry import read_entry

# 512 images, batches of 64: 8 steps per epoch, 2 epochs, last.ckpt every 2 steps, deterministic
RUN = ["defense=none", "data.train_subset=512", "data.val_size=128", "data.test_subset=128",
       "data.batch_size=64", "trainer.max_epochs=2", "trainer.deterministic=true",
       "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
       "model.optimizer.lr=0.003", "callbacks.step_checkpoint.every_n_train_steps=2"]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}


def _cmd(root: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *RUN, *extra, f"paths.root_dir={root}",
            f"paths.data_dir={data_dir}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir) -> dict:
    root = tmp_path_factory.mktemp("full")
    proc = subprocess.run(_cmd(root, data_dir), cwd=root, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_entry(root / "models" / "none-none.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_killed_run_resumes_to_identical_weights(sig, uninterrupted, tmp_path, data_dir):
    proc = subprocess.Popen(_cmd(tmp_path, data_dir), cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "logs").rglob("checkpoints/last.ckpt")):
        assert proc.poll() is None, "the run ended before its first step checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert not (tmp_path / "models" / "none-none.ckpt").exists(), "the run was not interrupted"
    if sig in (signal.SIGTERM, signal.SIGINT):
        name = signal.Signals(sig).name
        assert proc.returncode == (143 if sig == signal.SIGTERM else 130), out[-3000:]
        assert f"{name}: saved" in out, out[-3000:]
        # the exact command: this run's overrides, then ckpt_path=last
        assert f"stopped by {name}" in out and f"Resume with: python train.py {' '.join(RUN)}" in out
        assert "Detected KeyboardInterrupt" not in out
    else:
        assert proc.returncode == -signal.SIGKILL

    resumed = subprocess.run(_cmd(tmp_path, data_dir, "ckpt_path=last"), cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming 'none-none' from" in resumed.stdout + resumed.stderr
    entry = read_entry(tmp_path / "models" / "none-none.ckpt")
    assert entry["metrics"] == uninterrupted["metrics"]  # exactly, val/ and test/ alike
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(entry["state_dict"][key], value), key


def test_sigterm_after_the_last_step_stops_before_testing_and_resumes_to_register(
        tmp_path, data_dir):
    stop = compose("train", [*TINY_MEMBER, "defense=none",
                             "+callbacks.sigterm._target_=helpers.SigtermAtTrainEnd"],
                   tmp_path, data_dir)
    with pytest.raises(SystemExit) as info:
        train(stop)
    assert info.value.code == 143
    assert not (tmp_path / "models" / "none-none.ckpt").exists()  # stopped before test/register
    finished = list(tmp_path.rglob("checkpoints/fit_finished.json"))  # training itself is done
    assert len(finished) == 1
    last = finished[0].parent / "last.ckpt"  # (this in-process run writes outside logs/train)
    metrics = train(compose("train", [*TINY_MEMBER, "defense=none", f"ckpt_path={last}"],
                            tmp_path, data_dir))
    assert (tmp_path / "models" / "none-none.ckpt").is_file() and metrics["test/acc"] > 0.9


def _fake_training_checkpoint(path: Path, data: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data if data is not None else {"state_dict": {}, "loops": {}, "epoch": 0}, path)
    return path


def test_ckpt_path_last_finds_multirun_jobs_by_exact_name(tmp_path, data_dir):
    logs = tmp_path / "logs" / "train"
    older = _fake_training_checkpoint(logs / "runs/2024-01-01_00-00-00_stacker/checkpoints/last.ckpt")
    job = _fake_training_checkpoint(logs / "multiruns/2024-01-02_00-00-00/3_stacker/checkpoints/last.ckpt")
    os.utime(older, (1, 1))
    decoy = _fake_training_checkpoint(
        logs / "runs/2024-01-03_00-00-00_linear_stacker/checkpoints/last.ckpt")
    cfg = compose("train", ["model=stacker", "ckpt_path=last"], tmp_path, data_dir)
    assert _resume_path(cfg) == str(job)
    decoy.touch()  # newest, but another model's
    assert _resume_path(cfg) == str(job)
    none = compose("train", ["defense=none", "ckpt_path=last"], tmp_path, data_dir)
    with pytest.raises(FileNotFoundError, match="no last.ckpt for 'none-none'"):
        _resume_path(none)


class Foreign:  # pickled into a file: loading must refuse it, never run its code
    pass


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "pickled-object", "registry-file", "yaml"])
def test_bad_resume_checkpoint_fails_before_any_work(kind, tmp_path, data_dir):
    path = tmp_path / "bad.ckpt"
    if kind == "corrupt":
        path.write_bytes(os.urandom(2048))
    elif kind == "truncated":
        _fake_training_checkpoint(path, {"state_dict": {"w": torch.zeros(1000)}, "loops": {}})
        path.write_bytes(path.read_bytes()[:700])
    elif kind == "pickled-object":
        torch.save({"state_dict": {}, "loops": {}, "x": Foreign()}, path)
    elif kind == "yaml":
        path = tmp_path / "none-none.yaml"
        path.write_text("name: none-none\nseed: 0\n")
    else:
        torch.save({"format": "advdefense-model", "version": 1}, path)
    cfg = compose("train", ["defense=none", f"ckpt_path={path}"], tmp_path, data_dir)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    msg = str(info.value)
    assert "ckpt_path" in msg and str(path) in msg
    assert ("ckpt_path=last" in msg) or ("start over without ckpt_path" in msg)
    if kind == "yaml":
        assert "not a training checkpoint: it is a YAML file" in msg
    assert not (tmp_path / "models").exists() and not (tmp_path / "logs").exists()


def _run_checkpoint(logs: Path, folder: str, step: int, digest: str | None,
                    finished: bool = False, mtime: float | None = None) -> Path:
    data = {"state_dict": {}, "loops": {}, "epoch": 0, "global_step": step}
    if digest is not None:
        data["advdefense"] = {"name": "none-none", "digest": digest}
    path = _fake_training_checkpoint(logs / folder / "checkpoints/last.ckpt", data)
    if finished:
        (path.parent / "fit_finished.json").write_text("{}")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_ckpt_path_last_takes_the_furthest_checkpoint_of_this_config(tmp_path, data_dir, caplog):
    from advdefense.training.digest import config_digest

    cfg = compose("train", ["defense=none", "ckpt_path=last"], tmp_path, data_dir)
    digest, logs = config_digest(cfg), tmp_path / "logs" / "train"
    far = _run_checkpoint(logs, "runs/2024-01-01_00-00-00-aaaaaa_none-none", 100, digest, mtime=10)
    _run_checkpoint(logs, "runs/2024-01-02_00-00-00-bbbbbb_none-none", 50, digest, mtime=20)
    _run_checkpoint(logs, "runs/2024-01-03_00-00-00-cccccc_none-none", 900, "another", mtime=30)
    _run_checkpoint(logs, "runs/2024-01-03_00-00-00-dddddd_none-none", 950, None, mtime=40)
    with caplog.at_level("INFO", logger="advdefense"):
        assert _resume_path(cfg) == str(far)  # not the newest folder, not another config's
    assert "global step 100" in caplog.text and "the furthest of 2 with this config" in caplog.text

    other = compose("train", ["defense=none", "ckpt_path=last", "seed=7"], tmp_path, data_dir)
    assert _resume_path(other).endswith("dddddd_none-none/checkpoints/last.ckpt")  # legacy, unmarked
    for p in logs.glob("runs/*dddddd*/checkpoints/last.ckpt"):
        p.unlink()
    with pytest.raises(ConfigError, match="none of the 3 last.ckpt of 'none-none'.*global step 900"):
        _resume_path(other)


def test_a_plain_rerun_says_how_to_resume(tmp_path, data_dir, caplog):
    from advdefense.cli.train import _hint_interrupted
    from advdefense.training.digest import config_digest

    cfg = compose("train", ["defense=none", "data.train_subset=256"], tmp_path, data_dir)
    digest, logs = config_digest(cfg), tmp_path / "logs" / "train"
    with caplog.at_level("WARNING", logger="advdefense"):
        _hint_interrupted(cfg)
    assert caplog.text == ""
    _run_checkpoint(logs, "runs/2024-01-01_00-00-00-aaaaaa_none-none", 300, digest, finished=True)
    _run_checkpoint(logs, "runs/2024-01-02_00-00-00-bbbbbb_none-none", 900, "another")
    with caplog.at_level("WARNING", logger="advdefense"):
        _hint_interrupted(cfg)
    assert caplog.text == "", "a finished run or another config's run is not 'interrupted'"
    stopped = _run_checkpoint(logs, "runs/2024-01-03_00-00-00-cccccc_none-none", 40, digest)
    with caplog.at_level("WARNING", logger="advdefense"):
        _hint_interrupted(cfg)
    assert "interrupted run with this config" in caplog.text and str(stopped) in caplog.text
    assert "python train.py defense=none data.train_subset=256 ckpt_path=last" in caplog.text
