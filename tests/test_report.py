"""The report puts the paper's published numbers beside ours, and never runs a model."""

import json

import torch

from advdefense.evaluation.results import to_row, write_json
from advdefense.report import paper_tables, write_report


def _record(model, attack, threat, pred):
    return {"model": model, "attack": attack, "threat": threat, "pred": pred,
            "conf": [1.0] * len(pred)}


def test_report_has_paper_numbers_beside_ours(tmp_path):
    labels = torch.tensor([0, 1, 1, 0])
    rows = [to_row(_record("none-none", "fgsm", "transfer", [0, 1, 0, 0]), labels),
            to_row(_record("stacker", "none", "transfer", [0, 1, 1, 0]), labels)]
    rows[0]["flags"] = ["fgsm_beats_pgd"]
    write_json(tmp_path / "results.json", rows, {"n": 4, "models": ["none-none", "stacker"]})
    (tmp_path / "checks.json").write_text(json.dumps([
        {"check": "fgsm_beats_pgd", "model": "none-none", "threat": "transfer", "attack": "pgd",
         "passed": False, "detail": "PGD 0.9 vs FGSM 0.5"}]))
    text = write_report(tmp_path).read_text()
    # Table I FGSM: paper 0.722 / 0.746 / 0.733 beside ours (P=1, R=0.5, F1=0.667) with the flag
    line = next(ln for ln in text.splitlines() if ln.startswith("| fgsm (`fgsm`) | 0.722"))
    assert "| 1.000 | 0.500 | 0.667 ⚠ |" in line
    # Table VII: our stacker's clean row beside each of the paper's three preprocess rows
    vii = [ln for ln in text.splitlines() if "(`none`) | 0.99" in ln and "| 1.000 | 1.000 |" in ln]
    assert len(vii) == 3
    assert "python train.py preprocess=blur defense=none" in text  # missing model: command
    assert "PGD 0.9 vs FGSM 0.5" in text and "file-name bug" in text


def test_paper_tables_are_package_data():
    t = paper_tables()
    assert t["tables"]["I"]["rows"]["fgsm"]["f1"] == 0.733
    assert t["integrated"]["rows"]["squeeze/spatial_grid"]["accuracy"] == 0.5125


def _row(model, attack, threat, acc, n=100):
    return {"model": model, "attack": attack, "threat": threat, "accuracy": acc, "n": n,
            "accuracy_lo": max(0.0, acc - 0.05), "accuracy_hi": min(1.0, acc + 0.05), "flags": []}


def test_goals_section_says_met_or_by_how_much_and_compares_best_member():
    from advdefense.report import goals_section, robust_goals

    goals = robust_goals()
    assert {g["attack"] for g in goals["rows"]} >= {"none", "fgsm", "pgd", "jsma",
                                                     "spatial_engstrom", "spatial_uae",
                                                     "local_search", "worst_case"}
    rows = [_row("stacker", "none", "whitebox", 0.999), _row("stacker", "fgsm", "whitebox", 0.90),
            _row("stacker", "worst_case", "all", 0.40), _row("m1", "worst_case", "all", 0.45),
            _row("m2", "worst_case", "all", 0.10), _row("vote", "worst_case", "all", 0.9)]
    text = "\n".join(goals_section(rows, goals, {"stacker": "ensemble", "m1": "member",
                                                 "m2": "member", "vote": "ensemble"}))
    none_line = next(line for line in text.splitlines() if line.startswith("| none |"))
    assert none_line.endswith("| met |")
    fgsm_line = next(line for line in text.splitlines() if line.startswith("| FGSM"))
    assert "missed by 0.080" in fgsm_line and "0.019" in fgsm_line  # the paper's Table VII
    assert "not run" in next(line for line in text.splitlines() if line.startswith("| JSMA"))
    assert "best member `m1`" in text and "**less robust than**" in text  # 0.40 < 0.45; vote ignored
    assert "also takes the grid's other attacks" not in text
    assert "What was tried for these goals" in text and "Sparse-PGD adversarial training" in text
    rows.append(_row("stacker", "sparse_pgd", "whitebox", 0.0))
    text = "\n".join(goals_section(rows, goals, {"stacker": "ensemble", "m1": "member"}))
    assert "also takes the grid's other attacks (`sparse_pgd`)" in text
    assert goals_section([_row("m1", "none", "whitebox", 1.0)], goals) == []
    # white-box worst case compared too; both broken says so instead of "at least as robust"
    rows = [_row("stacker", "worst_case", "whitebox", 0.0), _row("m1", "worst_case", "whitebox", 0.0),
            _row("stacker", "worst_case", "all", 0.3), _row("m1", "worst_case", "all", 0.2)]
    text = "\n".join(goals_section(rows, goals, {"stacker": "ensemble", "m1": "member"}))
    assert "White-box worst case: `stacker`" in text and "comparison shows nothing" in text
    assert "Worst case over all threats: `stacker`" in text and "at least as robust as" in text
    # with the stacker's own member list, a stronger model outside the stacker is not its best member
    rows = [_row("stacker", "worst_case", "all", 0.3), _row("m1", "worst_case", "all", 0.2),
            _row("other", "worst_case", "all", 0.9)]
    kinds = {"stacker": "ensemble", "m1": "member", "other": "member"}
    text = "\n".join(goals_section(rows, goals, kinds, {"stacker": ["m1"]}))
    assert "best member `m1`" in text and "at least as robust as" in text
    text = "\n".join(goals_section(rows, goals, kinds))  # without it: every evaluated member
    assert "best member `other`" in text and "**less robust than**" in text


def test_dense_worst_case_is_reported_beside_the_full_one():
    from advdefense.report import goals_section, robust_goals, robust_summary

    rows = [_row("stacker", "none", "whitebox", 1.0), _row("stacker", "worst_case", "all", 0.0),
            _row("stacker", "worst_case_dense", "whitebox", 0.9),
            _row("m1", "worst_case", "all", 0.0), _row("m1", "worst_case_dense", "whitebox", 0.7),
            _row("m1", "none", "whitebox", 1.0)]
    text = "\n".join(goals_section(rows, robust_goals(), {"stacker": "ensemble", "m1": "member"}))
    line = next(t for t in text.splitlines() if t.startswith("White-box worst case over the dense"))
    assert "`stacker` 0.900" in line and "`m1` 0.700" in line and "at least as robust as" in line
    assert "other attacks" not in text  # the dense row is not an extra attack
    summary = "\n".join(robust_summary(rows))
    assert "without the L0 attacks" in summary and "0.900 [" in summary
    assert "without the L0 attacks" not in "\n".join(robust_summary(rows[:2]))
