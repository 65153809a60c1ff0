"""A command-line key that does not exist is answered with the key that does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT, compose
from hydra.errors import ConfigCompositionException

from advdefense.cli.hints import install_override_hints, suggest_keys, unknown_key_message


def test_suggests_the_nested_key(tmp_path, data_dir):
    cfg = compose("train", ["defense=fgsm"], tmp_path, data_dir)
    assert suggest_keys(cfg, "defense.eps") == ["defense.attack.eps"]
    assert suggest_keys(cfg, "trainer.max_epoch")[0] == "trainer.max_epochs"
    msg = unknown_key_message(cfg, "defense.eps", "2")
    assert msg.startswith("invalid config key defense.eps=2: no such key; "
                          "did you mean defense.attack.eps=2?")
    assert "keys under defense:" in msg and "attack" in msg and "\n" not in msg


def test_compose_error_names_the_real_key(tmp_path, data_dir):
    install_override_hints()
    assert not install_override_hints()  # installed once
    with pytest.raises(ConfigCompositionException, match=r"did you mean defense\.attack\.eps=2\?"):
        compose("train", ["defense=fgsm", "defense.eps=2"], tmp_path, data_dir)
    with pytest.raises(ConfigCompositionException, match="Could not append"):  # others untouched
        compose("train", ["+seed=3"], tmp_path, data_dir)


def test_train_py_prints_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ADVDEFENSE_RUN_ID"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "defense.eps=2",
                           f"paths.root_dir={tmp_path}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("invalid config key defense.eps=2: no such key; did you mean "
                            "defense.attack.eps=2?"), proc.stderr
    assert "object_type" not in proc.stderr and "+defense.eps" not in proc.stderr
