"""Certification in the evaluation: train a tiny ablation model, evaluate, certified.json, report."""

from __future__ import annotations

import json

import pytest

from advdefense.checks import ConfigError


@pytest.mark.slow
def test_train_register_evaluate_and_certify(tmp_path, data_dir) -> None:
    from helpers import TINY, compose

    from advdefense.certify import ablated_parts
    from advdefense.cli.evaluate import evaluate
    from advdefense.cli.train import train
    from advdefense.registry import load_model, model_path

    cfg = compose("train", [*TINY, "model=ablation", "model.net.keep=20", "model.net.n_eval=4",
                            "model.optimizer.lr=0.01", "trainer.max_epochs=3"], tmp_path, data_dir)
    assert cfg.name == "ablation-k20"
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.75  # learns from 20 of 784 pixels
    path = model_path(cfg.paths.models_dir, "ablation-k20")
    assert ablated_parts(load_model(path)) is not None
    ev = compose("evaluate", [
        "eval.n=16", "eval.progress=false", "eval.threats=[whitebox]", "eval.only_attacks=[fgsm]",
        "eval.sweep.enabled=false", "eval.models=[ablation-k20]", "eval.certify.n=400",
        "eval.certify.n0=20", "eval.certify.images=12", "eval.certify.max_radius=10",
        "eval.data_root=null"], tmp_path, data_dir)
    result = evaluate(ev)
    out = tmp_path / "out"
    records = json.loads((out / "certified.json").read_text())
    assert [r["model"] for r in records] == ["ablation-k20"]
    rec = records[0]
    assert rec["n_images"] == 12 and rec["n"] == 400 and rec["radii"] == list(range(11))
    acc = rec["certified_accuracy"]
    assert all(a >= b for a, b in zip(acc, acc[1:], strict=False))  # non-increasing in radius
    assert acc[0] > 0.25
    report = (out / "report.md").read_text()
    assert "Certified L0 accuracy" in report and "plots/certified_l0.png" in report
    assert (out / "plots" / "certified_l0.png").is_file()
    # certified figures stay out of the empirical rows
    assert all("certif" not in r["attack"] for r in result["rows"])


def test_certify_config_errors_name_the_key(tmp_path, data_dir) -> None:
    from helpers import compose

    from advdefense.evaluation.settings import certify_config

    assert certify_config(compose("evaluate", ["eval.certify.enabled=false"], tmp_path, data_dir).eval.certify) is None
    with pytest.raises(ConfigError, match="eval.certify.alpha"):
        certify_config(compose("evaluate", ["eval.certify.alpha=2"], tmp_path, data_dir).eval.certify)
    with pytest.raises(ConfigError, match="eval.certify.images"):
        certify_config(compose("evaluate", ["eval.certify.images=0"], tmp_path, data_dir).eval.certify)
