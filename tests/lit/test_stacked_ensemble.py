"""StackedEnsemble: frozen members, a trained head, clear errors for missing members."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from advdefense.attacks.fgsm import FGSM
from advdefense.defenses import AdversarialTraining
from advdefense.lit import StackedEnsemble
from advdefense.lit.classifier import member_pipeline
from advdefense.nets import SmallCNN
from advdefense.preprocess import Identity
from advdefense.registry import RegistryError, save_model

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
    module = StackedEnsemble(["none-a", "none-b"], str(registry), hidden=[16, 16],
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
    assert not StackedEnsemble(["none-a", "none-b"], str(registry), combine="vote").trainable
    assert StackedEnsemble(["none-a", "none-b"], str(registry)).trainable


def test_registry_spec_rebuilds_the_same_model(registry):
    from advdefense.registry import build_from_spec

    module = StackedEnsemble(["none-a", "none-b"], str(registry), hidden=[8])
    kind, spec = module.registry_spec()
    rebuilt = build_from_spec(kind, spec)
    rebuilt.load_state_dict(module.model.state_dict())
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(rebuilt.eval()(x), module.model.eval()(x))


def test_missing_member_names_the_command(registry):
    with pytest.raises(RegistryError, match="python train.py preprocess=blur defense=fgsm"):
        StackedEnsemble(["none-a", "blur-fgsm"], str(registry))
