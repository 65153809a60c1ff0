"""The config digest: what changes the trained weights changes it, nothing else does."""

from __future__ import annotations

from helpers import compose

from advdefense.training.digest import config_digest


def test_only_what_changes_the_weights_changes_the_digest(tmp_path, data_dir):
    base = config_digest(compose("train", ["defense=none"], tmp_path, data_dir))
    for same in (["data.num_workers=2"], ["name=other"]):
        assert config_digest(compose("train", ["defense=none", *same], tmp_path, data_dir)) == base
    assert config_digest(compose("train", ["defense=none"], tmp_path / "elsewhere", data_dir)) == base
    for other in (["data.batch_size=32"], ["seed=1"], ["trainer.max_epochs=3"]):
        assert config_digest(compose("train", ["defense=none", *other], tmp_path, data_dir)) != base


def test_an_ensemble_digest_follows_its_member_files(tmp_path, data_dir):
    cfg = compose("train", ["model=stacker", "model.members=[none-a,none-b]"], tmp_path, data_dir)
    missing = config_digest(cfg)
    models = tmp_path / "models"
    models.mkdir()
    (models / "none-a.ckpt").write_bytes(b"one")
    first = config_digest(cfg)
    (models / "none-a.ckpt").write_bytes(b"two")  # a retrained member retrains the ensemble
    assert len({missing, first, config_digest(cfg)}) == 3
