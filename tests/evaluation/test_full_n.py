"""eval.full_n: the goal model's rows ignore the time budget, its worst cases are completed by a
cascade and cover all n (or the query-only rows' n); other models keep the budget."""

import pytest
from eval_helpers import CountingAttack, data, linear_model, run_eval

from advdefense.attacks.threat import L0, Gradient, Linf, Queries, ThreatModel
from advdefense.checks import ConfigError
from advdefense.evaluation.budget import Budget, FullN, full_n_rule
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.threats import AttackSpec, EvalModel
from advdefense.evaluation.worst_case import WORST, WORST_DENSE
from advdefense.report import goals_section, verdict, write_report


class Sized(CountingAttack):
    """Signed-gradient step that records the batch sizes it ran on (deterministic per image)."""

    def __init__(self, eps: float, tm: ThreatModel | None = None) -> None:
        super().__init__(eps)
        self.sizes: list[int] = []
        if tm is not None:
            self.threat_model = tm

    def run(self, model, images, labels):
        self.sizes.append(len(images))
        return super().run(model, images, labels)


def _attacks():
    return {
        "big": Sized(0.004),                                           # listed: all n
        "other": Sized(0.008),                                         # budgeted, completed
        "l0": Sized(0.006, ThreatModel(L0(5), Gradient())),            # L0, completed last
        "q": Sized(0.005, ThreatModel(Linf(0.005), Queries(10))),      # listed, query-only
        "q2": Sized(0.01, ThreatModel(Linf(0.01), Queries(10))),       # query-only, completed
    }


def _run(tmp_path, attacks, full_n):
    x, y = data(40)
    models = [EvalModel("a", linear_model(0), "da"), EvalModel("g", linear_model(1), "dg")]
    where = {"q": ("blackbox",), "q2": ("blackbox",)}
    specs = [AttackSpec(k, a, {"eps": a.eps}, where.get(k, ("whitebox",)))
             for k, a in attacks.items()]
    out = run_eval(models, specs, x, y, ["whitebox", "blackbox"], None, CellCache(tmp_path / "c"),
                   tmp_path / "out", attack_n={"big": 8, "other": 8, "l0": 8, "q": 4, "q2": 4},
                   full_n=full_n)
    return out, x, y, models


def _brute(model, attacks, names, x, y):
    """(N,) bool: robust to the clean row and every attack in ``names``, each on all N images."""
    robust = model(x).argmax(1) == y
    for name in names:
        adv = CountingAttack(attacks[name].eps).run(model, x, y).images
        robust &= model(adv).argmax(1) == y
    return robust


def test_full_n_rows_worst_cases_and_cascade(tmp_path):
    attacks = _attacks()
    full = FullN(frozenset({"g"}), frozenset({"big", "q"}), query_n=12)
    out, x, y, models = _run(tmp_path, attacks, full)
    rows = {(r["model"], r["attack"], r["threat"]): r for r in out["rows"]}
    # the ordinary model keeps every budget; the full-n model's listed rows ignore it
    assert rows[("a", "big", "whitebox")]["n"] == 8 and rows[("g", "big", "whitebox")]["n"] == 40
    assert rows[("a", "q", "blackbox")]["n"] == 4 and rows[("g", "q", "blackbox")]["n"] == 12
    # unlisted rows keep their budget in the grid (and say so by their n) ...
    assert rows[("g", "other", "whitebox")]["n"] == 8 and rows[("g", "q2", "blackbox")]["n"] == 4
    # ... but the full-n model's worst cases cover all n (white-box) / the query rows' n
    assert rows[("g", WORST, "whitebox")]["n"] == 40
    assert rows[("g", WORST_DENSE, "whitebox")]["n"] == 40
    assert rows[("g", WORST, "blackbox")]["n"] == 12 and rows[("g", WORST, "all")]["n"] == 12
    assert rows[("a", WORST, "whitebox")]["n"] == 8 and rows[("a", WORST, "blackbox")]["n"] == 4
    g = models[1].module
    cells = out["cells"]
    # the worst case equals every attack run on every image (the cascade skips only broken ones)
    white = _brute(g, attacks, ["big", "other", "l0"], x, y)
    assert rows[("g", WORST, "whitebox")]["accuracy"] == pytest.approx(white.double().mean().item())
    assert cells.get("g", WORST, "whitebox").positions == list(range(40))
    dense = _brute(g, attacks, ["big", "other"], x, y)
    assert rows[("g", WORST_DENSE, "whitebox")]["accuracy"] == pytest.approx(
        dense.double().mean().item())
    idx = cells.get("g", WORST, "all").index
    assert len(idx) == 12 and idx == cells.get("g", "q", "blackbox").index
    every = _brute(g, attacks, list(attacks), x, y)[idx]
    assert rows[("g", WORST, "all")]["accuracy"] == pytest.approx(every.double().mean().item())
    # the completion ran only on images still robust outside the budget prefix
    robust_dense = _brute(g, attacks, ["big"], x, y)
    prefix = set(cells.get("g", "other", "whitebox").index)
    expected = sum(bool(robust_dense[p]) for p in range(40) if p not in prefix)
    assert attacks["other"].sizes == [8, 8, expected]  # a, g (budget), g (cascade)
    cascade = out["meta"]["full_n"]["cascade"]["g"]
    assert out["meta"]["full_n"]["worst_case_n"]["g"]["worst_case/all"] == 12
    assert cascade["whitebox"]["other"] == expected and "big" not in cascade["whitebox"]
    assert set(cascade["blackbox"]) == {"q2"}
    assert cells.get("g", WORST, "whitebox").info["cascade"]["whitebox"] == cascade["whitebox"]
    # the report states each row's n and the rule
    report = write_report(tmp_path / "out", plots=False).read_text()
    assert "the rows `big`, `q` ignore the time budget and ran on all n = 40" in report
    assert "12 stratified images (`eval.full_n.query_n`" in report
    assert "whitebox: `other` on " in report and "`worst_case/whitebox` n = 40" in report
    assert "| `g` | whitebox | other | 8 |" in report and "| `g` | whitebox | big | 40 |" in report


def test_without_cascade_the_worst_case_is_the_intersection(tmp_path):
    attacks = _attacks()
    full = FullN(frozenset({"g"}), frozenset({"big", "q"}), query_n=12, cascade=False)
    out, *_ = _run(tmp_path, attacks, full)
    rows = {(r["model"], r["attack"], r["threat"]): r for r in out["rows"]}
    assert rows[("g", WORST, "whitebox")]["n"] == 8 and rows[("g", WORST, "blackbox")]["n"] == 4
    assert attacks["other"].sizes == [8, 8]
    assert out["meta"]["full_n"]["cascade"] == {}
    # an ordinary run (no full-n model) states no rule: its meta and report are as before
    plain, *_ = _run(tmp_path / "plain", _attacks(), None)
    assert "full_n" not in plain["meta"]


def test_goal_note_says_which_n_the_worst_case_uses(tmp_path):
    attacks = _attacks()
    out, *_ = _run(tmp_path, attacks, FullN(frozenset({"g"}), frozenset({"big", "q"}), 12))
    goals = {"model": "g", "title": "Goals", "source": "test",
             "rows": [{"label": "worst case", "attack": "worst_case", "threat": "all",
                       "select": {"method": "worst_case"},
                       "goal": 0.1, "paper": None}]}
    text = "\n".join(goals_section(out["rows"], goals))
    white = next(r for r in out["rows"] if (r["model"], r["attack"], r["threat"])
                 == ("g", WORST, "whitebox"))
    assert "judged on n = 12" in text
    assert f"white-box worst case alone covers n = 40: {white['accuracy']:.3f}" in text
    assert verdict(white, 0.1) in text


def test_full_n_rule_defaults_to_the_goals_and_checks_values():
    goals = {"model": "stacker_adv_mean",
             "rows": [{"attack": "none"}, {"attack": "autoattack"}, {"attack": "worst_case"},
                      {"attack": "sparse_rs_k20"}, {"attack": "not_configured"}]}
    rows = ["autoattack", "pgd", "sparse_rs_k20"]
    rule = full_n_rule(None, goals, rows)
    assert rule == FullN(frozenset({"stacker_adv_mean"}),
                         frozenset({"autoattack", "sparse_rs_k20"}), 200, True)
    assert full_n_rule(None, None, rows) is None  # no experiment: no full-n model
    assert full_n_rule({"models": ["m"], "rows": ["pgd"], "query_n": None}, None, rows) == \
        FullN(frozenset({"m"}), frozenset({"pgd"}), None, True)
    for node, key in (({"rows": ["pgdd"]}, "eval.full_n.rows"),
                      ({"query_n": 0}, "eval.full_n.query_n"),
                      ({"cascade": "yes"}, "eval.full_n.cascade"),
                      ({"models": "m"}, "eval.full_n.models"),
                      ({"model": ["m"]}, "eval.full_n.model")):
        with pytest.raises(ConfigError, match=key):
            full_n_rule(node, goals, rows)


def test_budget_k_per_model():
    budget = Budget({"pgd": 795, "rs": 10, "grid": 199},
                    FullN(frozenset({"g"}), frozenset({"pgd", "rs", "grid"}), 200))
    assert budget.k("a", "pgd", "whitebox") == 795 and budget.k("g", "pgd", "whitebox") is None
    assert budget.k("a", "rs", "blackbox") == 10 and budget.k("g", "rs", "blackbox") == 200
    # a white-box row that only queries the model (the spatial grid) is not a black-box row
    assert budget.k("g", "grid", "whitebox") is None
    assert Budget({"rs": 500}, budget.full_n).k("g", "rs", "blackbox") == 500  # never below
    assert Budget({}, budget.full_n).k("g", "rs", "blackbox") is None          # CUDA: no budget


def test_experiment_robust_config_exempts_the_goal_model():
    from helpers import ROOT
    from hydra import compose, initialize_config_dir

    from advdefense.cli.evaluate import time_budget

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        robust = compose("evaluate", overrides=["eval.experiment=robust"])
        plain = compose("evaluate")
    budget = time_budget(robust, 1986)
    assert budget.full_n.models == {"stacker_adv_mean"}
    assert {"autoattack", "fgsm", "spatial_uae", "sparse_rs_k20"} <= budget.full_n.rows
    assert "pgd" not in budget.full_n.rows
    assert budget.k("stacker_adv_mean", "autoattack", "whitebox") is None
    assert budget.k("stacker_adv_mean", "spatial_engstrom", "whitebox") is None
    assert budget.k("stacker_adv_mean", "sparse_rs_k20", "blackbox") == 200
    assert budget.k("stacker_adv_mean", "sparse_rs_k10", "blackbox") == 10  # not a goal row
    assert budget.full_k("local_search_linf", "blackbox") == 200             # its cascade target
    assert budget.k("mean", "autoattack", "whitebox") == 199
    assert time_budget(plain, 1986).full_n is None
