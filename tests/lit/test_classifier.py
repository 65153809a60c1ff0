"""DefendedClassifier: model selection scores an adversarially trained member under its attack."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from advdefense.attacks.pgd import PGD
from advdefense.defenses import AdversarialTraining, TrainingDefense
from advdefense.lit import DefendedClassifier
from advdefense.nets import SmallCNN


def _fit(defense: TrainingDefense, images, labels, tmp_path, epochs: int = 2):
    torch.manual_seed(0)
    module = DefendedClassifier(SmallCNN((4, 8), 16), defense=defense)
    data = TensorDataset(images, labels)
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/select_acc", mode="max")
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[best],
                         num_sanity_val_steps=0, deterministic=True)
    trainer.fit(module, DataLoader(data, batch_size=64, shuffle=True),
                DataLoader(data, batch_size=128))
    return module, trainer


def _pgd() -> AdversarialTraining:
    return AdversarialTraining(PGD(eps=0.2, alpha=0.08, steps=3))  # clean + PGD


def test_adversarial_training_is_selected_on_attacked_validation_accuracy(mnist67_train, tmp_path):
    x, y = mnist67_train[0][:1024], mnist67_train[1][:1024]
    module, trainer = _fit(_pgd(), x, y, tmp_path)
    logged = trainer.callback_metrics
    assert float(logged["val/select_acc"]) == float(logged["val/adv_acc"])
    assert float(logged["val/adv_acc"]) < float(logged["val/acc"])  # PGD eps 0.2 bites
    # the figure is the attack's: recompute it with the same seed, outside Lightning
    module.eval()
    correct = []
    for xb, yb in zip(x.split(128), y.split(128), strict=True):  # the validation batches
        torch.manual_seed(0)  # each batch's attack starts from the fixed seed
        adv = module.defense.validation_images(module.model, xb, yb)
        with torch.no_grad():
            correct.append(module.model(adv).argmax(1) == yb)
    acc = torch.cat(correct).float().mean()
    assert abs(float(acc) - float(logged["val/adv_acc"])) < 1e-6


def test_clean_training_is_selected_on_clean_accuracy(mnist67_train, tmp_path):
    x, y = mnist67_train[0][:1024], mnist67_train[1][:1024]
    _, trainer = _fit(TrainingDefense(), x, y, tmp_path)
    logged = trainer.callback_metrics
    assert "val/adv_acc" not in logged
    assert float(logged["val/select_acc"]) == float(logged["val/acc"])


def test_the_validation_attack_leaves_the_training_stream_alone(mnist67_train, tmp_path,
                                                                 monkeypatch):
    """PGD's random starts in validation come from a forked, fixed-seed RNG: the trained weights
    are bit-identical to a run whose validation attacks nothing."""
    x, y = mnist67_train[0][:1024], mnist67_train[1][:1024]
    with_attack, _ = _fit(_pgd(), x, y, tmp_path / "a")
    monkeypatch.setattr(AdversarialTraining, "validation_images", lambda *a: None)
    without, trainer = _fit(_pgd(), x, y, tmp_path / "b")
    assert "val/adv_acc" not in trainer.callback_metrics
    for (k, a), b in zip(with_attack.state_dict().items(), without.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k


class _EarlyBest(DefendedClassifier):
    """Scores epoch 0 best, so the kept weights are not the last epoch's."""

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")
        self.log("val/select_acc", 1.0 - self.current_epoch, on_epoch=True, batch_size=1)


def test_the_runner_keeps_the_best_epoch_and_reports_its_own_metrics(mnist67_train, tmp_path):
    from omegaconf import OmegaConf

    from advdefense.cli.train import _load_best

    x, y = mnist67_train[0][:512], mnist67_train[1][:512]
    data = pl.LightningDataModule.from_datasets(TensorDataset(x, y), TensorDataset(x, y),
                                                batch_size=128)
    torch.manual_seed(0)
    module = _EarlyBest(SmallCNN((4, 8), 16))
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/select_acc", mode="max")
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[best],
                         num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    last_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    epoch0 = torch.load(best.best_model_path, weights_only=True)
    assert epoch0["epoch"] == 0
    metrics = _load_best(OmegaConf.create({"name": "m"}), trainer, module, data,
                         best.best_model_path, last_metrics)
    for k, v in epoch0["state_dict"].items():
        assert torch.equal(module.state_dict()[k], v), k
    with torch.no_grad():
        acc = (module.model(x).argmax(1) == y).float().mean()
    assert abs(metrics["val/acc"] - float(acc)) < 1e-6  # the kept weights' own figure
    assert metrics["val/acc"] != last_metrics["val/acc"]
