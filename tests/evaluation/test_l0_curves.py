"""Sparse attacks by pixel budget: curves from cell records, the report section and plot."""

from __future__ import annotations

import json

import pytest
import torch
from eval_helpers import data, linear_model, run_eval

from advdefense.attacks.threat import L0, Gradient, Linf, Queries, ThreatModel
from advdefense.evaluation.cells import Cell
from advdefense.evaluation.l0_curves import accuracy_at, l0_curves, median_l0

TMS = {"local_search": ThreatModel(L0(784), Queries(5000)),
       "jsma": ThreatModel(L0(78, "increase"), Gradient()),
       "fgsm": ThreatModel(Linf(0.3), Gradient())}


def rec(attack, threat, pred, l0, labels, index=None, model="m"):
    y = labels.tolist() if index is None else [int(labels[i]) for i in index]
    return Cell(model, attack, threat, y, pred, [1.0] * len(pred), index=index, l0=l0,
                method=attack, threat_model=TMS[attack])


def test_accuracy_at_a_budget_counts_only_successes_within_it():
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    records = [rec("local_search", "blackbox", [1, 0, 0, 0, 1, 1], [3, 25, 0, 90, 200, 7],
                   labels),
               rec("local_search", "transfer", [1, 1, 1, 1, 1, 1], [1] * 6, labels),  # not kept
               rec("fgsm", "whitebox", [1, 0, 1, 0, 1, 0], [784] * 6, labels)]  # not sparse
    (c,) = l0_curves(records)
    assert (c["model"], c["attack"], c["threat"], c["n"]) == ("m", "local_search", "blackbox", 6)
    # fooled: images 0 (3 px), 1 (25 px), 3 (90 px), 4 (200 px); image 5 was correct
    assert c["fooled_l0"] == [3, 25, 90, 200]
    assert [accuracy_at(c, k) for k in (0, 3, 24, 25, 100, None)] == pytest.approx(
        [1.0, 5 / 6, 5 / 6, 4 / 6, 3 / 6, 2 / 6])
    assert median_l0(c) == pytest.approx(25.0)  # torch's lower median of an even count
    assert median_l0({"fooled_l0": [], "n": 3}) is None


def test_budgeted_record_uses_the_labels_at_its_own_index():
    labels = torch.tensor([0, 1, 0, 1])
    (c,) = l0_curves([rec("jsma", "whitebox", [0, 0], [5, 9], labels, index=[1, 2])])
    assert c["n"] == 2 and c["fooled_l0"] == [5]  # position 1 (label 1) fooled; 2 correct
    assert c["k"] == 78
    with pytest.raises(ValueError, match="lists of lengths"):
        rec("jsma", "whitebox", [0, 0], [5], labels, index=[1, 2])


def test_pipeline_writes_curves_and_the_report_shows_them(tmp_path):
    from advdefense.attacks import LocalSearch, SparsePGD
    from advdefense.evaluation.cache import CellCache
    from advdefense.evaluation.threats import AttackSpec, EvalModel
    from advdefense.report import write_report

    x, y = data(16)
    model = EvalModel("lin", linear_model(1), "dl")
    specs = [AttackSpec("sparse_pgd", SparsePGD(k=5, steps=3, restarts=1), {"k": 5}, ("whitebox",)),
             AttackSpec("local_search", LocalSearch(rounds=4, max_queries=200), {}, ("blackbox",)),
             AttackSpec("local_search_linf", LocalSearch(eps=0.3, rounds=2, max_queries=50), {},
                        ("blackbox",))]
    out = run_eval([model], specs, x, y, ["whitebox", "blackbox"], None,
                   CellCache(tmp_path / "c"), tmp_path / "out", None, attack_n={"local_search": 8})
    curves = json.loads((tmp_path / "out" / "l0.json").read_text())
    assert curves == out["l0"]
    by = {c["attack"]: c for c in curves}
    assert set(by) == {"sparse_pgd", "local_search"}
    assert (by["sparse_pgd"]["k"], by["local_search"]["k"]) == (5, 784)  # declared budgets
    assert by["local_search"]["n"] == 8 and by["local_search"]["fooled_l0"]  # it fooled some
    assert by["sparse_pgd"]["fooled_l0"] and max(by["sparse_pgd"]["fooled_l0"]) <= 5
    rows = {(r["attack"], r["threat"]): r for r in out["rows"]}
    for attack, threat in (("sparse_pgd", "whitebox"), ("local_search", "blackbox")):
        assert accuracy_at(by[attack], None) == pytest.approx(rows[(attack, threat)]["accuracy"])
        accs = [accuracy_at(by[attack], k) for k in range(0, 100, 5)]
        assert accs == sorted(accs, reverse=True)  # a larger budget never helps the model
    text = write_report(tmp_path / "out").read_text()
    assert "## Sparse attacks by pixel budget" in text and "| `lin` | local_search |" in text
    assert (tmp_path / "out" / "plots" / "l0_local_search.png").stat().st_size > 1000
