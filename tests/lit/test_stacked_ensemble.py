"""StackedEnsemble: frozen members, a trained head, no file I/O; the CLI's builder loads the
members from the registry and names every missing one with the command that trains them."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from advdefense.attacks.fgsm import FGSM
from advdefense.checks import ConfigError
from advdefense.cli.stacker import stacked_ensemble
from advdefense.defenses import AdversarialTraining
from advdefense.lit import StackedEnsemble
from advdefense.models import member_pipeline
from advdefense.nets import SmallCNN, StackerMLP
from advdefense.preprocess import Identity
from advdefense.registry import MissingModels, RegistryError, save_model

SPEC = {"preprocess": {"_target_": "advdefense.preprocess.Identity"},
        "net": {"_target_": "advdefense.nets.SmallCNN", "channels": [4, 8], "hidden": 16}}


@pytest.fixture()
def registry(tmp_path):
    for i, name in enumerate(["none-a", "none-b"]):
        torch.manual_seed(i)
        save_model(tmp_path / f"{name}.ckpt", member_pipeline(Identity(), SmallCNN((4, 8), 16)),
                   "member", name, SPEC)
    return tmp_path


class MemberModes(pl.Callback):
    """Records whether any member was in training mode during a training step."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seen.append(any(m.training for m in module.model.members.modules()))


def _fit(module: StackedEnsemble, images, labels, steps: int = 6) -> list[bool]:
    loader = DataLoader(TensorDataset(images, labels), batch_size=32, shuffle=True)
    modes = MemberModes()
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", callbacks=[modes], val_check_interval=2)
    trainer.fit(module, loader, loader)
    return modes.seen


@pytest.mark.parametrize("target", ["ensemble", "members"])
def test_members_stay_frozen_while_the_head_trains(registry, mnist67_train, target):
    module = stacked_ensemble(["none-a", "none-b"], str(registry), hidden=[16, 16],
                              defense=AdversarialTraining(FGSM(eps=0.1)), defense_target=target)
    before = {k: v.clone() for k, v in module.model.members.state_dict().items()}
    head_before = [p.clone() for p in module.model.head.parameters()]
    x, y = mnist67_train
    modes = _fit(module, x[:256], y[:256])
    assert modes and not any(modes)
    for k, v in module.model.members.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(not p.requires_grad for p in module.model.members.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(head_before, module.model.head.parameters(),
                                                     strict=True))


def test_vote_has_nothing_to_train(registry):
    assert not stacked_ensemble(["none-a", "none-b"], str(registry), combine="vote").trainable
    assert stacked_ensemble(["none-a", "none-b"], str(registry)).trainable


def test_registry_spec_rebuilds_the_same_model(registry):
    from advdefense.registry import build_from_spec

    module = stacked_ensemble(["none-a", "none-b"], str(registry), hidden=[8])
    kind, spec = module.registry_spec()
    rebuilt = build_from_spec(kind, spec)
    rebuilt.load_state_dict(module.model.state_dict())
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(rebuilt.eval()(x), module.model.eval()(x))


def test_missing_member_names_the_command(registry):
    with pytest.raises(RegistryError, match="python train.py preprocess=blur defense=fgsm"):
        stacked_ensemble(["none-a", "blur-fgsm"], str(registry))


def test_every_missing_member_is_named_with_one_command(registry):
    with pytest.raises(MissingModels) as info:
        stacked_ensemble(["none-a", "blur-fgsm", "squeeze-fgsm", "none-b"], str(registry))
    assert info.value.missing == ["blur-fgsm", "squeeze-fgsm"]
    msg = str(info.value)
    assert msg.startswith(f"2 of the 4 members are not in the registry {registry}: "
                          "blur-fgsm, squeeze-fgsm; train them first: ")
    assert msg.endswith("python train.py -m preprocess=blur,squeeze defense=fgsm")


def _members(n: int) -> dict[str, torch.nn.Module]:
    return {f"m{i}": member_pipeline(Identity(), SmallCNN((4, 8), 16)) for i in range(n)}


def test_the_constructor_takes_modules_and_opens_no_file(monkeypatch):
    """Members and head arrive as modules; nothing is read (open / torch.load would fail)."""
    def no_io(*args, **kwargs):
        raise AssertionError("StackedEnsemble opened a file")

    monkeypatch.setattr("builtins.open", no_io)
    monkeypatch.setattr(torch, "load", no_io)
    members, head = _members(2), StackerMLP(4, [8])
    module = StackedEnsemble(members, head, "mlp")
    assert module.model.head is head
    assert all(a is b for a, b in zip(module.model.members.values(), members.values(),
                                      strict=True))
    assert all(not m.training and not any(p.requires_grad for p in m.parameters())
               for m in members.values())  # frozen on arrival
    assert module.trainable and not StackedEnsemble(_members(2), None, "mean").trainable
    with pytest.raises(ValueError, match="member_specs"):
        module.registry_spec()  # built from bare modules: nothing to rebuild it from


@pytest.mark.parametrize("combine, head", [("mlp", None), ("vote", "mlp")])
def test_head_must_match_combine(combine, head):
    with pytest.raises(ConfigError, match="model.head"):
        StackedEnsemble(_members(2), StackerMLP(4, [8]) if head else None, combine)
