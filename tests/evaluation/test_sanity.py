"""Each sanity check fires on a model (or rows) built to fail it, and flags the rows."""

import torch
from eval_helpers import RandomQueryAttack, Round, data, linear_model
from torch import nn

from advdefense.attacks.fgsm import FGSM
from advdefense.attacks.pgd import PGD
from advdefense.attacks.threat import L0, Gradient, Queries, ThreatModel
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.pipeline import SweepConfig, evaluate_models
from advdefense.evaluation.sanity import apply_flags, gradient_checks, grid_checks, sweep_checks
from advdefense.evaluation.threats import AttackSpec, EvalModel, attackable
from advdefense.preprocess import FeatureSqueeze


def failed(checks, name):
    return [c for c in checks if c["check"] == name and not c["passed"]]


def test_zero_gradient_fires_on_rounding_front_end_only():
    x, y = data(16)
    masked = nn.Sequential(Round(), linear_model())
    squeeze = nn.Sequential(FeatureSqueeze(window=1, bits=1, straight_through=False), linear_model())
    checks = gradient_checks({"masked": attackable(masked), "squeeze": attackable(squeeze),
                              "plain": linear_model()}, x, y)
    assert [c["model"] for c in checks if not c["passed"]] == ["masked"]
    # the raw squeeze model (no straight-through) would be masked too: attackable fixes it
    assert failed(gradient_checks({"raw": squeeze}, x, y), "zero_gradient")


def test_masked_model_is_flagged_end_to_end(tmp_path):
    """Rounding front end: zero gradient, PGD at eps=1 fails, black box beats white box."""
    x, y = data(16)
    masked = EvalModel("masked", nn.Sequential(Round(), linear_model(3)), "dm")
    specs = [AttackSpec("pgd", PGD(0.3, 0.1, 3), {"eps": 0.3}, ("whitebox",)),
             AttackSpec("random", RandomQueryAttack(), {}, ("blackbox",))]
    sweep = SweepConfig(n=16, eps=[0.0, 1.0], threats=["whitebox"],
                        factories={"pgd": (lambda e: PGD(e, max(e / 4, 1e-3), 3), {})})
    out = evaluate_models([masked], specs, x, y, ["whitebox", "blackbox"], None,
                          CellCache(tmp_path / "c"), tmp_path / "out", sweep, progress=False)
    names = {c["check"] for c in out["checks"] if not c["passed"]}
    assert {"zero_gradient", "eps1_not_broken", "blackbox_beats_whitebox"} <= names
    wb = [r for r in out["rows"] if r["threat"] == "whitebox"]
    assert wb and all("zero_gradient" in r["flags"] for r in wb)
    assert "blackbox_beats_whitebox" in (tmp_path / "out" / "results.csv").read_text()


def sweep_row(model, attack, threat, eps, acc):
    return {"model": model, "attack": attack, "threat": threat, "eps": eps, "accuracy": acc, "n": 100}


def test_sweep_checks_fire():
    rows = [sweep_row("m", "clean", "any", None, 0.99),
            sweep_row("m", "fgsm", "whitebox", 0.0, 0.90),   # eps 0 != clean
            sweep_row("m", "fgsm", "whitebox", 0.1, 0.50),
            sweep_row("m", "fgsm", "whitebox", 0.3, 0.70),   # rises with eps
            sweep_row("m", "pgd", "whitebox", 0.0, 0.99),
            sweep_row("m", "pgd", "whitebox", 0.1, 0.60),   # weaker than FGSM at 0.1
            sweep_row("m", "pgd", "whitebox", 1.0, 0.40)]   # not broken at eps 1
    checks = sweep_checks(rows)
    for name in ("eps0_not_clean", "acc_rises_with_eps", "fgsm_beats_pgd", "eps1_not_broken"):
        assert failed(checks, name), name
    good = [sweep_row("m", "clean", "any", None, 0.99), sweep_row("m", "pgd", "whitebox", 0.0, 0.99),
            sweep_row("m", "pgd", "whitebox", 1.0, 0.0)]
    assert all(c["passed"] for c in sweep_checks(good))


def grid_row(model, attack, threat, acc):
    return {"model": model, "attack": attack, "threat": threat, "accuracy": acc, "flags": []}


def test_grid_checks_fire_and_flag_rows():
    rows = [grid_row("m", "fgsm", "whitebox", 0.3), grid_row("m", "pgd", "whitebox", 0.6),
            grid_row("m", "pgd", "transfer", 0.4), grid_row("m", "worst_case", "whitebox", 0.3),
            grid_row("m", "worst_case", "blackbox", 0.1), grid_row("m", "none", "blackbox", 1.0),
            grid_row("ok", "pgd", "whitebox", 0.1), grid_row("ok", "pgd", "transfer", 0.5)]
    checks = grid_checks(rows, {"fgsm": 0.3, "pgd": 0.3})
    assert {c["check"] for c in checks if not c["passed"]} == {
        "fgsm_beats_pgd", "transfer_beats_whitebox", "blackbox_beats_whitebox"}
    apply_flags(rows, checks)
    assert set(rows[1]["flags"]) == {"fgsm_beats_pgd", "transfer_beats_whitebox",
                                     "blackbox_beats_whitebox"}
    assert rows[2]["flags"] == [] and rows[6]["flags"] == [] and rows[5]["flags"] == []


def test_fgsm_eps0_equals_clean_on_real_attack():
    x, y = data(16)
    model = linear_model()
    adv = FGSM(0.0)(model, x, y)
    assert torch.equal(adv, x)


def test_grid_checks_compare_budgeted_rows_on_shared_images():
    """A budgeted PGD row (4 of 8 images) is compared with FGSM on those 4 images only."""
    labels = torch.zeros(8, dtype=torch.long)
    fgsm = {"model": "m", "attack": "fgsm", "threat": "whitebox",
            "pred": [0, 0, 0, 0, 1, 1, 1, 1], "conf": [1.0] * 8}                      # right on 0-3 only
    pgd_ok = {"model": "m", "attack": "pgd", "threat": "whitebox",
              "pred": [1, 1, 1, 0], "index": [4, 5, 6, 7], "conf": [1.0] * 4}        # images FGSM already fooled
    pgd_bad = {"model": "m", "attack": "pgd", "threat": "whitebox",
               "pred": [0, 0, 0, 1], "index": [4, 5, 6, 7], "conf": [1.0] * 4}
    rows_ok = [grid_row("m", "fgsm", "whitebox", 0.5), grid_row("m", "pgd", "whitebox", 0.25)]
    rows_bad = [grid_row("m", "fgsm", "whitebox", 0.5), grid_row("m", "pgd", "whitebox", 0.75)]
    eps = {"fgsm": 0.3, "pgd": 0.3}
    # whole rows pass (0.25 <= 0.5) but on the shared images PGD 0.25 > FGSM 0.0: fires
    fired = grid_checks(rows_ok, eps, records=[fgsm, pgd_ok], labels=labels)
    assert failed(fired, "fgsm_beats_pgd")
    assert "4 shared images" in fired[0]["detail"]
    assert not failed(grid_checks(rows_ok, eps), "fgsm_beats_pgd")  # rows alone miss it
    # whole rows would fire (0.75 > 0.5); shared images: PGD 0.75 vs FGSM 0.0, still fires
    assert failed(grid_checks(rows_bad, eps, records=[fgsm, pgd_bad], labels=labels),
                  "fgsm_beats_pgd")
    # PGD on FGSM's right-answer images, fooling all: whole rows 0.0 vs 0.5, shared 0.0 vs 1.0
    pgd_good = {"model": "m", "attack": "pgd", "threat": "whitebox",
                "pred": [1, 1, 1, 1], "index": [0, 1, 2, 3], "conf": [1.0] * 4}
    rows = [grid_row("m", "fgsm", "whitebox", 0.5), grid_row("m", "pgd", "whitebox", 0.0)]
    assert not failed(grid_checks(rows, eps, records=[fgsm, pgd_good], labels=labels),
                      "fgsm_beats_pgd")


def test_pgd_vs_fgsm_is_a_white_box_check_only():
    rows = [grid_row("m", "fgsm", "transfer", 0.5), grid_row("m", "pgd", "transfer", 0.9)]
    assert not [c for c in grid_checks(rows, {"fgsm": 0.3, "pgd": 0.3})
                if c["check"] == "fgsm_beats_pgd"]
    sweep = [sweep_row("m", "fgsm", "transfer", 0.3, 0.5), sweep_row("m", "pgd", "transfer", 0.3, 0.9)]
    assert not failed(sweep_checks(sweep), "fgsm_beats_pgd")


def test_linf_black_box_stronger_than_pgd_flags_the_pgd_row():
    rows = [grid_row("m", "pgd", "whitebox", 0.95), grid_row("m", "local_search_linf", "blackbox", 0.4),
            grid_row("ok", "pgd", "whitebox", 0.3), grid_row("ok", "local_search_linf", "blackbox", 0.6)]
    checks = grid_checks(rows, {"pgd": 0.3})
    bad = failed(checks, "linf_blackbox_beats_pgd")
    assert [c["model"] for c in bad] == ["m"]
    apply_flags(rows, checks)
    assert rows[0]["flags"] == ["linf_blackbox_beats_pgd"] and rows[2]["flags"] == []


def test_l0_black_box_within_the_pixel_budget_flags_the_white_box_l0_row():
    labels = torch.tensor([0, 1, 0, 1])
    # the white-box L0 attack fools image 0 only (accuracy 0.75)
    spgd = {"model": "m", "attack": "sparse_pgd", "threat": "whitebox", "pred": [1, 1, 0, 1]}
    # the local search fools images 1, 2 and 3, but image 3 only with 120 changed pixels
    ls = {"model": "m", "attack": "local_search", "threat": "blackbox", "pred": [0, 0, 1, 0],
          "l0": [0, 10, 40, 120]}
    rows = [grid_row("m", "sparse_pgd", "whitebox", 0.75),
            grid_row("m", "local_search", "blackbox", 0.25)]
    tms = {"sparse_pgd": ThreatModel(L0(78), Gradient()),
           "local_search": ThreatModel(L0(784), Queries(5000))}
    checks = grid_checks(rows, {}, records=[spgd, ls], labels=labels, threat_models=tms)
    (check,) = [c for c in checks if c["check"] == "l0_blackbox_beats_whitebox"]
    assert not check["passed"] and "0.5000 vs white-box sparse_pgd 0.7500" in check["detail"]
    apply_flags(rows, checks)
    assert rows[0]["flags"] == ["l0_blackbox_beats_whitebox"] and rows[1]["flags"] == []
    # a budget of 30 pixels counts only image 1: 0.75 vs 0.75 passes
    tms30 = tms | {"sparse_pgd": ThreatModel(L0(30), Gradient())}
    checks = grid_checks(rows, {}, records=[spgd, ls], labels=labels, threat_models=tms30)
    assert not failed(checks, "l0_blackbox_beats_whitebox")
    assert [c for c in checks if c["check"] == "l0_blackbox_beats_whitebox"]
    # records without per-image L0 (an older cache) are not compared
    old = {k: v for k, v in ls.items() if k != "l0"}
    checks = grid_checks(rows, {}, records=[spgd, old], labels=labels, threat_models=tms)
    assert not [c for c in checks if c["check"] == "l0_blackbox_beats_whitebox"]
    # a white-box attack that only adds ink is not compared with one that may erase it
    ink = tms | {"sparse_pgd": ThreatModel(L0(78, "increase"), Gradient())}
    checks = grid_checks(rows, {}, records=[spgd, ls], labels=labels, threat_models=ink)
    assert not [c for c in checks if c["check"] == "l0_blackbox_beats_whitebox"]
    # the check follows the threat models, not the names: renamed rows, the same verdict
    new = {"sparse_pgd": "wb_l0", "local_search": "qq"}
    renamed = [r | {"attack": new[r["attack"]]} for r in (spgd, ls)]
    rrows = [r | {"attack": new[r["attack"]]} for r in rows]
    checks = grid_checks(rrows, {}, records=renamed, labels=labels,
                         threat_models={new[k]: v for k, v in tms.items()})
    (check,) = [c for c in checks if c["check"] == "l0_blackbox_beats_whitebox"]
    assert not check["passed"] and check["attack"] == "wb_l0" 


def test_threat_models_of_the_configured_attacks():
    from advdefense.attacks import JSMA, PGD, SparsePGD, SparseRS
    from advdefense.evaluation.pipeline import sparse_attacks, threat_models
    from advdefense.evaluation.threats import AttackSpec

    specs = [AttackSpec("pgd", PGD()), AttackSpec("jsma", JSMA(gamma=0.1)),
             AttackSpec("x", SparsePGD(k=40)), AttackSpec("y", SparseRS(k=10)),
             AttackSpec("none", None)]
    tms = threat_models(specs)
    assert {n: tm.l0.k for n, tm in tms.items() if tm and tm.l0} == {"jsma": 78, "x": 40, "y": 10}
    assert tms["none"] is None and tms["pgd"].l0 is None
    assert sparse_attacks(specs) == ["jsma", "x", "y"]
