"""evaluate.py end to end on a tiny registry (Hydra compose, in process)."""

import json

import pytest
from hydra import compose, initialize_config_dir

from advdefense.evaluation.grid import MissingSurrogateError
from advdefense.lit.classifier import member_pipeline
from advdefense.nets import SmallCNN
from advdefense.preprocess import Identity
from advdefense.registry import save_model

CONF = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "conf")
SPEC = {"preprocess": {"_target_": "advdefense.preprocess.Identity"},
        "net": {"_target_": "advdefense.nets.SmallCNN"}}


def _cfg(tmp_path, *extra):
    over = [f"paths.root_dir={tmp_path}", f"paths.models_dir={tmp_path}/models",
            f"paths.log_dir={tmp_path}/logs", f"paths.output_dir={tmp_path}/out",
            f"paths.data_dir={tmp_path}/data", "eval.data_root=null", "eval.n=12",
            "eval.progress=false", "eval.attacks.pgd.steps=2", "eval.sweep.n=8",
            "eval.sweep.eps=[0.0,0.3,1.0]", "eval.sweep.overrides.pgd.steps=2",
            "eval.sweep.angles=[-10,0,10]", "eval.sweep.shifts=[-1,0,1]", "eval.sweep.gradient_n=8",
            "eval.only_attacks=[fgsm,pgd]", *extra]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("evaluate", overrides=over)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, mnist67_train):
    from helpers import train_cnn

    root = tmp_path_factory.mktemp("reg")
    x, y = mnist67_train
    for i, name in enumerate(("none-none", "none-fgsm")):
        net = train_cnn(x, y, epochs=1, seed=i, n=600)
        save_model(root / "models" / f"{name}.ckpt", member_pipeline(Identity(), net), "member",
                   name, SPEC)
    return root


@pytest.mark.slow
def test_evaluate_end_to_end_then_cached(registry, capsys):
    from advdefense.cli.evaluate import evaluate

    first = evaluate(_cfg(registry))
    console = capsys.readouterr().out  # the summary: one line per model, the grid only in files
    assert len(console.splitlines()) <= 40 and "none-fgsm" in console and "pgd" in console
    out = registry / "out"
    for f in ("results.json", "results.csv", "report.md", "plots/eps_pgd.png", "plots/rotation.png",
              "plots/examples_fgsm.png", "plots/confusion.png"):
        assert (out / f).is_file(), f
    rows = json.loads((out / "results.json").read_text())["rows"]
    keys = {(r["model"], r["attack"], r["threat"]) for r in rows}
    assert ("none-fgsm", "pgd", "whitebox") in keys and ("none-none", "worst_case", "all") in keys
    # the default time budget (eval.attack_n) runs white-box PGD on 40% of the 12 images (5)
    budgeted = {("pgd", "whitebox"), ("worst_case", "whitebox"), ("worst_case", "all")}
    assert all(r["n"] == (5 if (r["attack"], r["threat"]) in budgeted else 12)
               and 0 <= r["accuracy"] <= 1 for r in rows)
    assert "`pgd` on 5" in (out / "report.md").read_text()
    clean = [r["accuracy"] for r in rows if r["attack"] == "none"]
    assert min(clean) > 0.7  # trained members, not random
    assert "Table VII" in (out / "report.md").read_text()
    assert first["meta"]["attack_calls"] > 0
    second = evaluate(_cfg(registry))
    assert second["meta"]["attack_calls"] == 0  # every cell (and transfer image) reused


@pytest.mark.slow
def test_evaluate_one_ckpt_without_transfer(registry, tmp_path):
    from advdefense.cli.evaluate import evaluate

    cfg = _cfg(tmp_path, f"ckpt={registry}/models/none-fgsm.ckpt", "eval.threats=[whitebox]",
               "eval.sweep.enabled=false")
    rows = evaluate(cfg)["rows"]
    assert {r["model"] for r in rows} == {"none-fgsm"}


def test_missing_surrogate_names_the_command(tmp_path):
    from advdefense.cli.evaluate import evaluate

    net = SmallCNN()
    save_model(tmp_path / "models" / "x.ckpt", member_pipeline(Identity(), net), "member", "x", SPEC)
    with pytest.raises(MissingSurrogateError, match="python train.py preprocess=none defense=none"):
        evaluate(_cfg(tmp_path))


@pytest.mark.slow
def test_autoattack_row_with_convergence_check(registry, tmp_path):
    """conf/attack/autoattack.yaml through evaluate.py: the row, its budget, the check."""
    from advdefense.cli.evaluate import evaluate

    cfg = _cfg(tmp_path, f"paths.models_dir={registry}/models", "eval.only_attacks=[autoattack]",
               "eval.threats=[whitebox]", "eval.sweep.enabled=false",
               "eval.attacks.autoattack.attacks.apgd_ce.steps=4",
               "eval.attacks.autoattack.attacks.apgd_margin.steps=4",
               "eval.attack_n.autoattack=6", "eval.sanity.convergence_n=4")
    result = evaluate(cfg)
    rows = [r for r in result["rows"] if r["attack"] == "autoattack"]
    assert {r["model"] for r in rows} == {"none-none", "none-fgsm"}
    assert all(r["n"] == 6 and r["threat"] == "whitebox" for r in rows)
    checks = [c for c in result["checks"] if c["check"] == "attack_not_converged"]
    assert {c["model"] for c in checks} == {"none-none", "none-fgsm"}
    assert all("on 4 images" in c["detail"] for c in checks)


def _renamed(cfg, prefix: str):
    """``cfg`` with every attack row renamed ``<prefix><name>`` wherever the config names it."""
    from omegaconf import OmegaConf, open_dict

    ev = OmegaConf.to_container(cfg.eval, resolve=True)

    def keys(d):
        return {prefix + k: v for k, v in (d or {}).items()}

    ev["attacks"], ev["attack_threats"] = keys(ev["attacks"]), keys(ev["attack_threats"])
    ev["attack_n"], ev["attack_n_cuda"] = keys(ev["attack_n"]), keys(ev["attack_n_cuda"]) or None
    ev["only_attacks"] = [prefix + a for a in ev["only_attacks"]]
    ev["sweep"]["attacks"] = [prefix + a for a in ev["sweep"]["attacks"]]
    ev["sweep"]["overrides"] = keys(ev["sweep"]["overrides"])
    with open_dict(cfg):
        cfg.eval = ev
        cfg.paths.output_dir = f"{cfg.paths.output_dir}_renamed"
        cfg.eval.cache_dir = f"{cfg.eval.cache_dir}_renamed"  # computed again, not reused
    return cfg


@pytest.mark.slow
def test_renaming_every_row_in_the_config_changes_no_check_and_no_figure(registry, tmp_path):
    """Every attack row renamed in the config (attacks, threats, budgets, sweeps): the same
    rows, checks, flags, sweeps, goals' verdicts and report, up to the names."""
    import shutil

    from advdefense.cli.evaluate import evaluate

    models = tmp_path / "models"
    models.mkdir()
    for src, dst in (("none-none", "none-none"), ("none-fgsm", "none-fgsm"),
                     ("none-fgsm", "stacker_adv_mean")):  # the robust goals' model
        shutil.copy(registry / "models" / f"{src}.ckpt", models / f"{dst}.ckpt")
    names = ["fgsm", "pgd", "autoattack", "sparse_pgd_k20", "sparse_rs_k20", "spatial_uae",
             "local_search_linf", "jsma_k20"]
    cfg = _cfg(tmp_path, f"paths.models_dir={models}", f"eval.only_attacks=[{','.join(names)}]",
               "eval.experiment=robust", "eval.attacks.autoattack.attacks.apgd_ce.steps=3",
               "eval.attacks.autoattack.attacks.apgd_margin.steps=3",
               "eval.attacks.sparse_pgd_k20.steps=2", "eval.attacks.sparse_rs_k20.max_queries=20",
               "eval.attacks.local_search_linf.max_queries=30", "eval.attacks.spatial_uae.n_angles=3",
               "eval.sanity.convergence_n=4")
    a = evaluate(cfg)
    back = {"r_" + n: n for n in cfg.eval.attacks}  # every row the config names, run or not
    b = evaluate(_renamed(cfg, "r_"))

    def unname(value):
        if isinstance(value, dict):
            return {k: unname(v) for k, v in value.items() if k not in ("seconds", "timings",
                                                                         "cache_hits")}
        if isinstance(value, list):
            return [unname(v) for v in value]
        if isinstance(value, str):
            for new in sorted(back, key=len, reverse=True):
                value = value.replace(new, back[new])
        if isinstance(value, float) and value != value:
            return "nan"  # NaN (an undefined precision) compares equal to itself here
        return value

    assert unname(b["rows"]) == unname(a["rows"])
    assert unname(b["checks"]) == unname(a["checks"]) and a["checks"]
    assert unname(b["sweeps"]) == unname(a["sweeps"]) and a["sweeps"]["eps"]
    assert any(c["check"] == "fgsm_beats_pgd" for c in a["checks"])  # found by method
    assert any(c["check"] == "linf_blackbox_beats_pgd" for c in a["checks"])
    out = tmp_path / "out"
    text = (out / "report.md").read_text()
    assert unname((tmp_path / "out_renamed" / "report.md").read_text()) == text
    assert "## Goals of experiment=robust" in text and "| FGSM eps 0.3 |" in text
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(
        unname(p.name) for p in (tmp_path / "out_renamed" / "plots").iterdir())
