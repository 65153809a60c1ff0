"""The model registry: round trips, and clear errors for every kind of bad file."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

import advdefense
from advdefense.checks import ImageError
from advdefense.ensembles import build_ensemble
from advdefense.models import member_pipeline
from advdefense.nets import SmallCNN, StackerMLP
from advdefense.preprocess import FeatureSqueeze, GaussianBlur
from advdefense.registry import (
    MissingModels,
    RegistryError,
    list_models,
    load_members,
    prev_path,
    read_entry,
    register_model,
    registry_lock,
    save_model,
)

SPEC = {"preprocess": {"_target_": "advdefense.preprocess.GaussianBlur", "sigma": 1.5,
                       "kernel_size": 7},
        "net": {"_target_": "advdefense.nets.SmallCNN", "channels": [4, 8], "hidden": 16}}


def _member(seed: int = 0):
    torch.manual_seed(seed)
    return member_pipeline(GaussianBlur(1.5, 7), SmallCNN((4, 8), 16))


@pytest.fixture()
def saved(tmp_path):
    model = _member()
    path = save_model(tmp_path / "blur-x.ckpt", model, "member", "blur-x", SPEC, {"test/acc": 0.5})
    return path, model


def test_member_round_trip(saved):
    path, model = saved
    loaded = advdefense.load_model(path)
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert not loaded.training and loaded.name == "blur-x"
    assert read_entry(path)["metrics"] == {"test/acc": 0.5}
    assert list_models(path.parent) == ["blur-x"]


def test_ensemble_round_trip(tmp_path):
    members = {"a": _member(0), "b": _member(1)}
    skip_head = StackerMLP(4, [8, 8], skip="mean")
    torch.nn.init.normal_(skip_head.mlp[-1].weight)  # a trained correction, not the zero start
    for combine, head, skip in [("mlp", StackerMLP(4, [8, 8]), "none"), ("mlp", skip_head, "mean"),
                                ("vote", None, None), ("mean", None, None)]:
        model = build_ensemble(combine, members, head)
        spec = {"combine": combine, "members": {"a": SPEC, "b": SPEC},
                "head": {"_target_": "advdefense.nets.StackerMLP", "in_features": 4,
                         "hidden": [8, 8], "skip": skip} if head else None}
        path = save_model(tmp_path / f"{combine}-{skip}.ckpt", model, "ensemble", combine, spec)
        x = torch.rand(3, 1, 28, 28)
        torch.testing.assert_close(advdefense.load_model(path)(x), model.eval()(x))


def test_inputs_are_checked(saved):
    model = advdefense.load_model(saved[0])
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        model(torch.rand(2, 1, 28, 28) * 255)
    with pytest.raises(ImageError, match="shape"):
        model(torch.rand(2, 28, 28))
    with pytest.raises(ImageError, match="NaN"):
        model(torch.full((1, 1, 28, 28), float("nan")))


def test_missing_file(tmp_path):
    with pytest.raises(RegistryError, match="no model file"):
        advdefense.load_model(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_file(saved, damage):
    path, _ = saved
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        path.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:400]) + data[400:])
    with pytest.raises(RegistryError, match="corrupt|not an advdefense|not a model file|do not fit"):
        advdefense.load_model(path)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_foreign_pickle_is_never_unpickled(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"format": "advdefense-model", "x": Evil()}, f)
    with pytest.raises(RegistryError):
        advdefense.load_model(path)
    assert "pwned" not in capsys.readouterr().out


def test_foreign_target_is_refused(tmp_path):
    spec = {**SPEC, "net": {"_target_": "os.system", "command": "echo pwned"}}
    payload = {"format": "advdefense-model", "version": 1, "kind": "member", "name": "x",
               "spec": spec, "state_dict": {}, "metrics": {}, "config": {}}
    torch.save(payload, tmp_path / "x.ckpt")
    with pytest.raises(RegistryError, match="not an advdefense class"):
        advdefense.load_model(tmp_path / "x.ckpt")


def test_other_architecture_is_a_clear_error(saved):
    path, _ = saved
    entry = read_entry(path)
    entry["spec"]["net"]["hidden"] = 32
    torch.save(entry, path)
    with pytest.raises(RegistryError, match="do not fit the architecture"):
        advdefense.load_model(path)


def test_lightning_checkpoint_is_not_a_registry_entry(tmp_path):
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6"}, tmp_path / "last.ckpt")
    with pytest.raises(RegistryError, match="not an advdefense model file"):
        advdefense.load_model(tmp_path / "last.ckpt")


def test_save_is_atomic_and_checks_the_spec(tmp_path):
    model = member_pipeline(FeatureSqueeze(), SmallCNN((4, 8), 16))
    with pytest.raises(RuntimeError):  # spec says blur + other widths: refuse to write
        save_model(tmp_path / "bad.ckpt", model, "member", "bad",
                   {**SPEC, "net": {"_target_": "advdefense.nets.SmallCNN"}})
    assert list(tmp_path.iterdir()) == []


def test_float64_images_are_converted(saved):
    path, model = saved
    loaded = advdefense.load_model(path)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    logits = loaded(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, model.eval()(x.detach().float()))
    logits.sum().backward()  # attacks on float64 inputs get float64 gradients
    assert x.grad is not None and x.grad.dtype == torch.float64
    for bad in (torch.zeros(1, 1, 28, 28, dtype=torch.uint8), torch.zeros(1, 1, 28, 28, dtype=torch.int64)):
        with pytest.raises(ImageError, match="floating point"):
            loaded(bad)


def test_yaml_is_not_a_model_file(saved):
    path, _ = saved
    yaml = path.with_suffix(".yaml")
    yaml.write_text("name: blur-x\nseed: 0\nmodel:\n  lr: 0.001\n")
    with pytest.raises(RegistryError, match="is not a model file: it is a YAML file") as info:
        advdefense.load_model(yaml)
    assert f"the model itself is {path}" in str(info.value)
    notes = path.parent / "notes.ckpt"
    notes.write_text("just some text\n")
    with pytest.raises(RegistryError, match="not a model file: it is a text file"):
        advdefense.load_model(notes)


def _register(tmp_path, seed: int, acc: float):
    return register_model(tmp_path, "blur-x", _member(seed), "member", SPEC,
                          {"test/acc": acc}, yaml_text=f"seed: {seed}\n")


def test_replacing_an_entry_keeps_the_previous_one(tmp_path):
    first = _register(tmp_path, 0, 0.996)
    assert first.previous is None and "replacing the previous entry" not in first.message()
    old_bytes = first.path.read_bytes()
    second = _register(tmp_path, 1, 0.518)
    assert second.path == first.path == tmp_path / "blur-x.ckpt"
    assert second.previous == prev_path(second.path) == tmp_path / "blur-x.prev.ckpt"
    assert second.previous.read_bytes() == old_bytes  # the old entry, intact and loadable
    assert read_entry(second.previous)["metrics"] == {"test/acc": 0.996}
    assert read_entry(second.path)["metrics"] == {"test/acc": 0.518}
    assert (tmp_path / "blur-x.prev.yaml").read_text() == "seed: 0\n"
    assert (tmp_path / "blur-x.yaml").read_text() == "seed: 1\n"
    msg = second.message()
    assert "test/acc 0.5180" in msg and "test/acc 0.9960" in msg and "WORSE" in msg
    assert f"mv {second.previous} {second.path}" in msg
    assert list_models(tmp_path) == ["blur-x"]  # .prev is not an entry
    third = _register(tmp_path, 2, 0.999)
    assert "WORSE" not in third.message()
    assert read_entry(third.previous)["metrics"] == {"test/acc": 0.518}


def test_a_failed_write_leaves_the_previous_entry(tmp_path):
    first = _register(tmp_path, 0, 0.996)
    with pytest.raises(RuntimeError):  # the spec does not fit the model: nothing is written
        register_model(tmp_path, "blur-x", member_pipeline(FeatureSqueeze(), SmallCNN((8, 8), 16)),
                       "member", SPEC)
    assert read_entry(first.path)["metrics"] == {"test/acc": 0.996}


def test_registry_lock_is_exclusive(tmp_path):
    import fcntl
    import os

    with registry_lock(tmp_path) as lock:
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(fd)


def test_load_members_gives_frozen_members_and_their_specs(tmp_path):
    saved = {n: _member(i) for i, n in enumerate(["blur-b", "blur-a"])}
    for name, model in saved.items():
        save_model(tmp_path / f"{name}.ckpt", model, "member", name, SPEC)
    modules, specs = load_members(tmp_path, ["blur-b", "blur-a"])
    assert list(modules) == list(specs) == ["blur-b", "blur-a"]  # the order asked for
    assert specs["blur-a"] == SPEC
    x = torch.rand(3, 1, 28, 28)
    for name, module in modules.items():
        assert not module.training and not any(p.requires_grad for p in module.parameters())
        torch.testing.assert_close(module(x), saved[name].eval()(x))
    with pytest.raises(MissingModels) as info:
        load_members(tmp_path, ["blur-x", "blur-a", "none-y"])
    assert info.value.missing == ["blur-x", "none-y"]
    assert str(info.value) == (f"2 of the 3 members are not in the registry {tmp_path}: "
                               "blur-x, none-y; train them first")
    save_model(tmp_path / "mean.ckpt", build_ensemble("mean", modules), "ensemble", "mean",
               {"combine": "mean", "members": specs, "head": None})
    with pytest.raises(RegistryError, match="is not a member .kind .ensemble.."):
        load_members(tmp_path, ["blur-a", "mean"])


LAYERING = """
import sys, torch
from advdefense.models import member_pipeline
from advdefense.nets import SmallCNN, StackerMLP
from advdefense.ensembles import build_ensemble
from advdefense.preprocess import Identity
from advdefense.registry import load_members, load_model, save_model
spec = {"preprocess": {"_target_": "advdefense.preprocess.Identity"},
        "net": {"_target_": "advdefense.nets.SmallCNN", "channels": [4, 8], "hidden": 16}}
save_model("m.ckpt", member_pipeline(Identity(), SmallCNN((4, 8), 16)), "member", "m", spec)
ens = build_ensemble("mlp", {"m": member_pipeline(Identity(), SmallCNN((4, 8), 16))},
                     StackerMLP(2, [4]))
head = {"_target_": "advdefense.nets.StackerMLP", "in_features": 2, "hidden": [4]}
save_model("e.ckpt", ens, "ensemble", "e", {"combine": "mlp", "members": {"m": spec}, "head": head})
load_model("m.ckpt"), load_model("e.ckpt"), load_members(".", ["m"])
print(" ".join(sorted(m for m in sys.modules if m.startswith(("advdefense", "pytorch_lightning")))))
"""


def test_the_registry_builds_models_without_lightning_modules_or_the_cli(tmp_path):
    """Saving and loading members and ensembles imports no advdefense.lit / cli (nor Lightning)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", LAYERING], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = proc.stdout.split()
    assert "advdefense.registry" in loaded and "advdefense.nets" in loaded
    assert not [m for m in loaded if m.startswith(("advdefense.lit", "advdefense.cli",
                                                   "pytorch_lightning"))], loaded
