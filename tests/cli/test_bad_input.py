"""Bad input gets a clear error before any work: through train.py / evaluate.py configs
(the command-line path itself: tests/cli/test_train.py::test_bad_config_value_fails_before_training).

Each case asserts the message names the key, the value and what is allowed, and that nothing
was written (no registry entry, no run folder, no results).
"""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_MEMBER, compose

from advdefense.cli.train import train

CASES = [  # overrides, what the message must contain
    (["defense=fgsm", "defense.attack.eps=1.5"], ["eps=1.5", "[0, 1]"]),
    (["defense=fgsm", "defense.attack.eps=-0.1"], ["eps=-0.1", "[0, 1]"]),
    (["preprocess=blur", "preprocess.sigma=0"], ["preprocess.sigma=0", "(0, inf]"]),
    (["preprocess=blur", "preprocess.sigma=-2"], ["preprocess.sigma=-2", "(0, inf]"]),
    (["preprocess=squeeze", "preprocess.window=4"], ["preprocess.window=4", "odd"]),
    (["preprocess=squeeze", "preprocess.window=0"], ["preprocess.window=0", "odd"]),
    (["model=stacker", "model.members=[]"], ["model.members=[]", "non-empty list"]),
    (["model=stacker", "model.members=[none-nothing]"],
     ["none-nothing", "not in the registry", "python train.py preprocess=none defense=nothing"]),
    (["trainer.accelerator=gpu"], ["trainer.accelerator='gpu'", "no CUDA GPU", "trainer=default"]),
    (["trainer=ddp"], ["trainer.accelerator='gpu'", "no CUDA GPU"]),
    (["data.batch_size=0"], ["data.batch_size=0", "integer >= 1"]),
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
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "logs").exists() and not (tmp_path / "out").exists()


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
