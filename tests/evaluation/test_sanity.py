"""Each sanity check fires on a model (or rows) built to fail it, and flags the rows."""

import torch
from eval_helpers import RandomQueryAttack, Round, data, linear_model, run_eval
from torch import nn

from advdefense.attacks.fgsm import FGSM
from advdefense.attacks.pgd import PGD
from advdefense.attacks.threat import L0, Gradient, Linf, Queries, ThreatModel
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.cells import Cell
from advdefense.evaluation.results import to_row
from advdefense.evaluation.sanity import apply_flags, gradient_checks, grid_checks, sweep_checks
from advdefense.evaluation.settings import SweepConfig
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
    out = run_eval([masked], specs, x, y, ["whitebox", "blackbox"], None,
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


LINF = ThreatModel(Linf(0.3), Gradient())
METHOD_TM = {"fgsm": LINF, "pgd": LINF, "local_search_linf": ThreatModel(Linf(0.3), Queries(2000))}


def grid_cell(model, attack, threat, acc, method=None, tm=None, n=100):
    """A cell of ``n`` images (label 0) of which the first ``acc * n`` stay correct."""
    method = method or ("worst_case" if attack.startswith("worst_case") else attack)
    k = round(acc * n)
    tm = tm or METHOD_TM.get(method)
    return Cell(model, attack, threat, [0] * n, [0] * k + [1] * (n - k), [1.0] * n,
                method=method, threat_model=tm)


def test_grid_checks_fire_and_flag_rows():
    cells = [grid_cell("m", "fgsm", "whitebox", 0.3), grid_cell("m", "pgd", "whitebox", 0.6),
             grid_cell("m", "pgd", "transfer", 0.4), grid_cell("m", "worst_case", "whitebox", 0.3),
             grid_cell("m", "worst_case", "blackbox", 0.1),
             grid_cell("m", "none", "blackbox", 1.0),
             grid_cell("ok", "pgd", "whitebox", 0.1), grid_cell("ok", "pgd", "transfer", 0.5)]
    checks = grid_checks(cells)
    assert {c["check"] for c in checks if not c["passed"]} == {
        "fgsm_beats_pgd", "transfer_beats_whitebox", "blackbox_beats_whitebox"}
    rows = [to_row(c) for c in cells]
    apply_flags(rows, checks)
    assert set(rows[1]["flags"]) == {"fgsm_beats_pgd", "transfer_beats_whitebox",
                                     "blackbox_beats_whitebox"}
    assert "fgsm_beats_pgd" in rows[0]["flags"]  # the FGSM row the check compared with
    assert rows[2]["flags"] == [] and rows[6]["flags"] == [] and rows[5]["flags"] == []


def test_pgd_vs_fgsm_follows_methods_and_eps_not_names():
    """Renamed rows give the same check; a PGD of smaller eps than FGSM's is not compared."""
    cells = [grid_cell("m", "one_step", "whitebox", 0.3, "fgsm"),
             grid_cell("m", "iterative", "whitebox", 0.6, "pgd")]
    (check,) = [c for c in grid_checks(cells) if c["check"] == "fgsm_beats_pgd"]
    assert not check["passed"] and (check["attack"], check["also"]) == ("iterative", "one_step")
    small = [cells[0], grid_cell("m", "iterative", "whitebox", 0.6, "pgd",
                                 ThreatModel(Linf(0.1), Gradient()))]
    assert not [c for c in grid_checks(small) if c["check"] == "fgsm_beats_pgd"]
    # a row *named* pgd whose attack is no PGD is not compared either
    named = [cells[0], grid_cell("m", "pgd", "whitebox", 0.6, "apgd")]
    assert not [c for c in grid_checks(named) if c["check"] == "fgsm_beats_pgd"]


def test_fgsm_eps0_equals_clean_on_real_attack():
    x, y = data(16)
    model = linear_model()
    adv = FGSM(0.0)(model, x, y)
    assert torch.equal(adv, x)


def test_grid_checks_compare_budgeted_rows_on_shared_images():
    """A budgeted PGD row (4 of 8 images) is compared with FGSM on those 4 images only."""
    zeros = [0] * 4
    fgsm = Cell("m", "fgsm", "whitebox", [0] * 8, [0, 0, 0, 0, 1, 1, 1, 1], [1.0] * 8,
                method="fgsm", threat_model=LINF)                        # right on 0-3 only

    def pgd(pred, index):
        return Cell("m", "pgd", "whitebox", zeros, pred, [1.0] * 4, index=index, method="pgd",
                    threat_model=LINF)

    # whole rows pass (0.25 <= 0.5) but on the shared images PGD 0.25 > FGSM 0.0: fires
    fired = grid_checks([fgsm, pgd([1, 1, 1, 0], [4, 5, 6, 7])])
    assert failed(fired, "fgsm_beats_pgd") and "4 shared images" in fired[0]["detail"]
    assert failed(grid_checks([fgsm, pgd([0, 0, 0, 1], [4, 5, 6, 7])]), "fgsm_beats_pgd")
    # PGD on FGSM's right-answer images, fooling all: whole rows 0.0 vs 0.5, shared 0.0 vs 1.0
    assert not failed(grid_checks([fgsm, pgd([1, 1, 1, 1], [0, 1, 2, 3])]), "fgsm_beats_pgd")


def test_pgd_vs_fgsm_is_a_white_box_check_only():
    cells = [grid_cell("m", "fgsm", "transfer", 0.5), grid_cell("m", "pgd", "transfer", 0.9)]
    assert not [c for c in grid_checks(cells) if c["check"] == "fgsm_beats_pgd"]
    sweep = [sweep_row("m", "fgsm", "transfer", 0.3, 0.5), sweep_row("m", "pgd", "transfer", 0.3, 0.9)]
    assert not failed(sweep_checks(sweep), "fgsm_beats_pgd")


def test_linf_black_box_stronger_than_pgd_flags_the_pgd_row():
    cells = [grid_cell("m", "pgd", "whitebox", 0.95),
             grid_cell("m", "ls", "blackbox", 0.4, "local_search_linf"),
             grid_cell("ok", "pgd", "whitebox", 0.3),
             grid_cell("ok", "ls", "blackbox", 0.6, "local_search_linf")]
    checks = grid_checks(cells)
    bad = failed(checks, "linf_blackbox_beats_pgd")
    assert [c["model"] for c in bad] == ["m"]
    rows = [to_row(c) for c in cells]
    apply_flags(rows, checks)
    assert rows[0]["flags"] == ["linf_blackbox_beats_pgd"] and rows[2]["flags"] == []


def test_l0_black_box_within_the_pixel_budget_flags_the_white_box_l0_row():
    labels = [0, 1, 0, 1]
    tms = {"sparse_pgd": ThreatModel(L0(78), Gradient()),
           "local_search": ThreatModel(L0(784), Queries(5000))}

    def cells(tms, l0=(0, 10, 40, 120), names=("sparse_pgd", "local_search")):
        # the white-box L0 attack fools image 0 only (accuracy 0.75); the local search fools
        # images 1, 2 and 3, but image 3 only with 120 changed pixels
        return [Cell("m", names[0], "whitebox", labels, [1, 1, 0, 1], [1.0] * 4,
                     method="sparse_pgd", threat_model=tms["sparse_pgd"]),
                Cell("m", names[1], "blackbox", labels, [0, 0, 1, 0], [1.0] * 4,
                     l0=None if l0 is None else list(l0), method="local_search",
                     threat_model=tms["local_search"])]

    def l0_checks(cs):
        return [c for c in grid_checks(cs) if c["check"] == "l0_blackbox_beats_whitebox"]

    (check,) = l0_checks(cells(tms))
    assert not check["passed"] and "0.5000 vs white-box sparse_pgd 0.7500" in check["detail"]
    rows = [to_row(c) for c in cells(tms)]
    apply_flags(rows, [check])
    assert rows[0]["flags"] == ["l0_blackbox_beats_whitebox"] and rows[1]["flags"] == []
    # a budget of 30 pixels counts only image 1: 0.75 vs 0.75 passes
    (check,) = l0_checks(cells(tms | {"sparse_pgd": ThreatModel(L0(30), Gradient())}))
    assert check["passed"]
    # cells without per-image L0 (an older cache) are not compared
    assert not l0_checks(cells(tms, l0=None))
    # a white-box attack that only adds ink is not compared with one that may erase it
    assert not l0_checks(cells(tms | {"sparse_pgd": ThreatModel(L0(78, "increase"), Gradient())}))
    # the check follows the threat models, not the names: renamed rows, the same verdict
    (check,) = l0_checks(cells(tms, names=("wb_l0", "qq")))
    assert not check["passed"] and check["attack"] == "wb_l0"


def test_threat_models_of_the_configured_attacks():
    from advdefense.attacks import JSMA, PGD, SparsePGD, SparseRS
    from advdefense.evaluation.cells import spec_identity

    specs = [AttackSpec("pgd", PGD()), AttackSpec("jsma", JSMA(gamma=0.1)),
             AttackSpec("x", SparsePGD(k=40)), AttackSpec("y", SparseRS(k=10)),
             AttackSpec("none", None)]
    ids = {s.name: spec_identity(s) for s in specs}
    assert {n: tm.l0.k for n, (_, tm) in ids.items() if tm and tm.l0} == {"jsma": 78, "x": 40,
                                                                          "y": 10}
    assert ids["none"] == ("none", None) and ids["pgd"][1].l0 is None
    assert [m for m, _ in ids.values()] == ["pgd", "jsma", "sparse_pgd", "sparse_rs", "none"]
