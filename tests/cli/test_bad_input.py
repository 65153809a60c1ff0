"""Bad input gets a clear error before any work: through train.py / evaluate.py configs
(the command-line path itself: tests/cli/test_train.py::test_bad_config_value_fails_before_training).

Each case asserts the message names the key, the value and what is allowed, and that nothing
was written (no registry entry, no run folder, no results).
"""

from __future__ import annotations

import os

import pytest
import torch
from helpers import TINY_MEMBER, compose

from advdefense.checks import ConfigError
from advdefense.cli.train import train

CASES = [  # overrides, what the message must contain
    (["defense=fgsm", "defense.attack.eps=1.5"], ["eps=1.5", "[0, 1]"]),
    (["defense=fgsm", "defense.attack.eps=-0.1"], ["eps=-0.1", "[0, 1]"]),
    (["preprocess=blur", "preprocess.sigma=0"], ["preprocess.sigma=0", "(0, inf]"]),
    (["preprocess=blur", "preprocess.sigma=-2"], ["preprocess.sigma=-2", "(0, inf]"]),
    (["preprocess=squeeze", "preprocess.window=4"], ["preprocess.window=4", "odd"]),
    (["preprocess=squeeze", "preprocess.window=0"], ["preprocess.window=0", "odd"]),
    (["model=stacker", "model.members=[]"], ["model.members=[]", "non-empty list"]),
    (["model=stacker", "model.members=[none-nothing]"],  # no conf/defense/nothing.yaml
     ["none-nothing", "not in the registry", "with the command that made it", "name=<the name>"]),
    (["model=stacker", "model.members=[none-pgd_spatial_uae_wide,blur-fgsm]"],  # a custom name
     ["2 of the 2 members", "python train.py preprocess=blur defense=fgsm; train "
      "none-pgd_spatial_uae_wide with the command that made it"]),
    (["trainer.accelerator=gpu"], ["trainer.accelerator='gpu'", "no CUDA GPU", "trainer=default"]),
    (["trainer=ddp"], ["trainer.accelerator='gpu'", "no CUDA GPU"]),
    (["data.batch_size=0"], ["data.batch_size=0", "integer >= 1"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs=0", "integer >= 1", "untrained"]),
    (["trainer.max_epochs=abc"], ["trainer.max_epochs='abc'", "integer >= 1"]),
    (["+trainer.max_steps=0"], ["trainer.max_steps=0", "integer >= 1", "-1"]),
    (["model=stacker", "model.members=[none-fgsm,blur-fgsm,squeeze-fgsm,blur-blackbox]"],
     ["4 of the 4 members", "none-fgsm, blur-fgsm, squeeze-fgsm, blur-blackbox",
      "python train.py -m preprocess=none,blur,squeeze defense=fgsm,blackbox skip_if_registered=true"]),
    (["model=stacker"], ["6 of the 6 members", "squeeze-blackbox",
                         "python train.py -m preprocess=none,blur,squeeze defense=fgsm,blackbox"]),
]


@pytest.mark.parametrize("overrides, expected", CASES, ids=lambda v: " ".join(v) if isinstance(
    v, list) and "=" in v[0] else None)
def test_bad_train_config_fails_before_any_work(overrides, expected, tmp_path, data_dir):
    if "gpu" in " ".join(overrides) or "ddp" in overrides[0]:
        if torch.cuda.is_available():
            pytest.skip("a GPU is present: the device exists")
    cfg = compose("train", [*TINY_MEMBER, *overrides], tmp_path, data_dir)
    with pytest.raises(Exception) as info:
        train(cfg)
    msg = str(info.value)
    for part in expected:
        assert part in msg, msg
    assert "\n" not in msg and "_target_" not in msg, msg  # one line, no config dump
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "logs").exists() and not (tmp_path / "out").exists()


def test_a_stacker_member_that_is_there_is_not_listed(tmp_path, data_dir):
    from advdefense.lit.classifier import member_pipeline
    from advdefense.nets import SmallCNN
    from advdefense.preprocess import Identity
    from advdefense.registry import save_model

    spec = {"preprocess": {"_target_": "advdefense.preprocess.Identity"},
            "net": {"_target_": "advdefense.nets.SmallCNN"}}
    save_model(tmp_path / "models" / "none-fgsm.ckpt", member_pipeline(Identity(), SmallCNN()),
               "member", "none-fgsm", spec)
    cfg = compose("train", [*TINY_MEMBER, "model=stacker",
                            "model.members=[none-fgsm,blur-fgsm,blur-blackbox]"], tmp_path, data_dir)
    with pytest.raises(Exception) as info:
        train(cfg)
    msg = str(info.value)
    assert "2 of the 3 members" in msg and "blur-fgsm, blur-blackbox" in msg
    assert "none-fgsm," not in msg
    assert "python train.py -m preprocess=blur defense=fgsm,blackbox" in msg  # exactly those two


def _fail_before_fit(tmp_path, data_dir, monkeypatch, overrides: list[str]) -> str:
    """train() must raise before the trainer exists (no log folder, no Trainer built)."""
    import pytorch_lightning as pl

    def no_trainer(*args, **kwargs):
        raise AssertionError("a Trainer was built: the check came too late")

    monkeypatch.setattr(pl, "Trainer", no_trainer)
    cfg = compose("train", [*TINY_MEMBER, "defense=none", *overrides], tmp_path, data_dir)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()
    return str(info.value)


def test_models_folder_that_is_a_file_fails_before_training(tmp_path, data_dir, monkeypatch):
    (tmp_path / "models").write_text("not a folder")
    msg = _fail_before_fit(tmp_path, data_dir, monkeypatch, [])
    assert "paths.models_dir" in msg and "is a file, not a folder" in msg
    assert "paths.models_dir=/elsewhere" in msg
    blocked = tmp_path / "blocked"
    blocked.write_text("x")
    msg = _fail_before_fit(tmp_path, data_dir, monkeypatch, [f"paths.models_dir={blocked}/sub/models"])
    assert f"{blocked} is a file" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_models_folder_fails_before_training(tmp_path, data_dir, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o555)
    try:
        msg = _fail_before_fit(tmp_path, data_dir, monkeypatch, [])
    finally:
        models.chmod(0o755)
    assert "paths.models_dir" in msg and "not writable" in msg


def test_full_disk_fails_before_training(tmp_path, data_dir, monkeypatch):
    import shutil

    (tmp_path / "models").mkdir()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=4096))
    msg = _fail_before_fit(tmp_path, data_dir, monkeypatch, [])
    assert "paths.output_dir" in msg and "MiB free" in msg


def test_write_probe_finds_a_read_only_folder(tmp_path, monkeypatch):
    import errno

    from advdefense.checks import check_writable

    check_writable("paths.models_dir", tmp_path / "new" / "models")  # creatable: fine
    assert not (tmp_path / "new").exists()  # and nothing was created
    check_writable("paths.models_dir", tmp_path)
    assert list(tmp_path.iterdir()) == [], "the probe file was left behind"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(ConfigError, match=r"paths.models_dir=.*not writable \(Read-only file system\)"):
        check_writable("paths.models_dir", tmp_path)


def test_yaml_passed_as_a_model_is_not_a_model_file(tmp_path, data_dir):
    from advdefense.cli.evaluate import evaluate
    from advdefense.registry import RegistryError

    path = tmp_path / "none-fgsm.yaml"
    path.write_text("name: none-fgsm\nseed: 0\n")
    cfg = compose("evaluate", [f"ckpt={path}", "eval.threats=[whitebox]", "eval.n=20"],
                  tmp_path, data_dir)
    with pytest.raises(RegistryError, match="is not a model file: it is a YAML file"):
        evaluate(cfg)


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 100, "registry-of-another-arch"])
def test_evaluate_bad_ckpt_is_a_clear_error(content, tmp_path, data_dir):
    from advdefense.cli.evaluate import evaluate
    from advdefense.lit.classifier import member_pipeline
    from advdefense.nets import SmallCNN
    from advdefense.preprocess import Identity
    from advdefense.registry import RegistryError, save_model

    path = tmp_path / "bad.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:  # a valid file whose weights are for a wider net than its spec says
        spec = {"preprocess": {"_target_": "advdefense.preprocess.Identity"},
                "net": {"_target_": "advdefense.nets.SmallCNN", "channels": [16, 32], "hidden": 128}}
        save_model(path, member_pipeline(Identity(), SmallCNN()), "member", "bad", spec)
        payload = torch.load(path, weights_only=True)
        payload["spec"]["net"]["hidden"] = 64
        torch.save(payload, path)
    cfg = compose("evaluate", [f"ckpt={path}", "eval.threats=[whitebox]", "eval.n=20"],
                  tmp_path, data_dir)
    with pytest.raises(RegistryError) as info:
        evaluate(cfg)
    msg = str(info.value)
    assert str(path) in msg
    assert ("corrupt" in msg) or ("do not fit the architecture" in msg)
    assert not (tmp_path / "out" / "results.json").exists()


def test_evaluate_device_resolution():
    from advdefense.checks import ConfigError
    from advdefense.cli.evaluate import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ConfigError, match="eval.device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"eval.device='cuda'.*0 CUDA device"):
            resolve_device("cuda")
