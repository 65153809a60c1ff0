"""experiment pipelines: members, ensembles and evaluation in one call; reruns skip done work."""

from __future__ import annotations

import json

import pytest
from helpers import ROOT, TINY, TINY_MEMBER
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from advdefense.cli.experiment import run_experiment

pytestmark = pytest.mark.slow

EVAL = ["eval.n=32", "eval.only_attacks=[fgsm]", "eval.threats=[whitebox,transfer]",
        "eval.sweep.enabled=false", "eval.progress=false"]


def _run(tmp_path, data_dir, member_lr: float = 0.003) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper_quick"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.data_dir = str(data_dir)
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.models_dir = str(tmp_path / "models")
            cfg.paths.output_dir = str(tmp_path / "out")
            cfg.pipeline = OmegaConf.create({
                "members": [{"preprocess": "none", "defense": "none"},
                            {"preprocess": "squeeze", "defense": "fgsm",
                             "overrides": [f"model.optimizer.lr={member_lr}"]}],
                "member_overrides": TINY_MEMBER,
                "ensembles": ["stacker"],
                "ensemble_overrides": [*TINY, "model.members=[none-none,squeeze-fgsm]"],
                "evaluate": True,
                "evaluate_overrides": EVAL,
            })
            del cfg.hydra
        return run_experiment(cfg)


def test_pipeline_then_rerun_skips_done_models(tmp_path, data_dir, caplog, capsys):
    with caplog.at_level("INFO"):
        first = _run(tmp_path, data_dir)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("report.md" in m for m in messages) == 1  # the report path, once
    assert any(m.startswith("paper_quick: members ") and "total" in m for m in messages)
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 40 and "stacker" in out
    models = tmp_path / "models"
    assert sorted(p.name for p in models.glob("*.ckpt")) == [
        "none-none.ckpt", "squeeze-fgsm.ckpt", "stacker.ckpt"]
    stamps = {p.name: p.stat().st_mtime_ns for p in models.glob("*.ckpt")}
    report = tmp_path / "out" / "evaluation" / "report.md"
    assert report.is_file() and "Table VII" in report.read_text()
    result = json.loads((tmp_path / "out" / "evaluation" / "results.json").read_text())
    assert result["meta"]["members"] == {"stacker": ["none-none", "squeeze-fgsm"]}
    # the report knows its experiment, and paper_quick has no goals
    assert result["meta"]["experiment"] == "paper_quick"
    assert "Experiment: `paper_quick`" in report.read_text()
    assert "Goals of" not in report.read_text()
    rows = result["rows"]
    assert {r["model"] for r in rows} >= {"none-none", "squeeze-fgsm", "stacker"}
    assert first["members"]["squeeze-fgsm"]["test/acc"] > 0.9
    _run(tmp_path, data_dir)
    assert {p.name: p.stat().st_mtime_ns for p in models.glob("*.ckpt")} == stamps
    timings = json.loads((tmp_path / "out" / "experiment.json").read_text())["timings"]
    assert [t["stage"] for t in timings][:2] == ["member none-none", "member squeeze-fgsm"]
    # A member whose config changed is trained again, and so is the stacker over it.
    _run(tmp_path, data_dir, member_lr=0.002)
    assert (models / "squeeze-fgsm.ckpt").stat().st_mtime_ns != stamps["squeeze-fgsm.ckpt"]
    assert (models / "stacker.ckpt").stat().st_mtime_ns != stamps["stacker.ckpt"]
    assert (models / "none-none.ckpt").stat().st_mtime_ns == stamps["none-none.ckpt"]


@pytest.mark.parametrize("trainer, expected", [("default", []), ("ddp_cpu", ["trainer=ddp_cpu"])])
def test_experiment_trainer_choice_reaches_every_stage(trainer, expected, tmp_path, data_dir):
    from helpers import compose as compose_cfg

    from advdefense.cli.experiment import member_overrides

    cfg = compose_cfg("train", ["experiment=paper_quick", f"trainer={trainer}"], tmp_path,
                      data_dir)
    overrides = member_overrides(cfg, {"preprocess": "none", "defense": "fgsm"})
    assert [o for o in overrides if o.startswith("trainer=")] == expected


def test_member_name_and_override_order(monkeypatch):
    from helpers import ROOT
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import advdefense.cli.experiment as experiment

    assert experiment.member_name({"preprocess": "none", "defense": "pgd"}) == "none-pgd"
    wide = OmegaConf.create({"preprocess": "none", "defense": "pgd", "name": "none-pgd_wide",
                             "overrides": ["trainer.max_epochs=8", "model.net.hidden=256"]})
    assert experiment.member_name(wide) == "none-pgd_wide"
    monkeypatch.setattr(experiment, "_trainer", lambda: [])
    cfg = OmegaConf.create({"seed": 0, "paths": {"models_dir": "m"},
                            "pipeline": {"member_overrides": ["trainer.max_epochs=5"]}})
    overrides = experiment.member_overrides(cfg, wide)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        composed = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    # the member's own overrides come after the experiment's, so they win
    assert composed.name == "none-pgd_wide" and composed.trainer.max_epochs == 8
    assert composed.model.net.hidden == 256 and composed.paths.models_dir == "m"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_its_ensembles_use_its_members(name):
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from advdefense.cli.experiment import member_name

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"])
    GlobalHydra.instance().clear()
    names = {member_name(m) for m in cfg.pipeline.members}
    assert len(names) == len(cfg.pipeline.members)  # no two members share a registry entry
    for override in cfg.pipeline.get("ensemble_overrides", []):
        found = re.fullmatch(r"model\.members=\[(.*)\]", str(override))
        if found:
            assert set(found.group(1).split(",")) <= names


def test_stage_times_is_one_line():
    from advdefense.cli.experiment import stage_times

    timings = [{"stage": "member none-none", "seconds": 10.2},
               {"stage": "member blur-none", "seconds": 12.0},
               {"stage": "ensemble stacker", "seconds": 3.0},
               {"stage": "evaluation", "seconds": 100.4}]
    assert stage_times(timings) == ("members 22 s (2), ensemble 3 s, evaluation 100 s, "
                                    "total 126 s")


def test_eval_device_reaches_only_the_evaluation_stage():
    """``eval.device=cuda`` on an experiment command is forwarded to the evaluation stage only."""
    import advdefense.cli.experiment as experiment

    knobs = ["trainer.max_epochs=1", "data.test_subset=40", "eval.device=cuda"]
    assert experiment._eval_knobs(knobs) == ["eval.n=40", "eval.device=cuda"]
    assert experiment._train_knobs(knobs) == ["trainer.max_epochs=1", "data.test_subset=40"]
