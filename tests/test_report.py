"""The report puts the paper's published numbers beside ours, and never runs a model."""

import json

import torch

from advdefense.evaluation.results import to_row, write_json
from advdefense.report import paper_tables, robust_goals, write_report

# The model experiment=robust's goals judge (the stacker variant registers under its own name).
JUDGED = robust_goals()["model"]


def _record(model, attack, threat, pred, labels):
    from advdefense.attacks.threat import Gradient, Linf, ThreatModel
    from advdefense.evaluation.cells import Cell

    tm = None if attack == "none" else ThreatModel(Linf(0.3), Gradient())
    return Cell(model, attack, threat, labels.tolist(), pred, [1.0] * len(pred), method=attack,
                threat_model=tm)


def test_report_has_paper_numbers_beside_ours(tmp_path):
    labels = torch.tensor([0, 1, 1, 0])
    rows = [to_row(_record("none-none", "fgsm", "transfer", [0, 1, 0, 0], labels)),
            to_row(_record("stacker", "none", "transfer", [0, 1, 1, 0], labels))]
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
    assert {g["attack"] for g in goals["rows"]} >= {"none", "fgsm", "autoattack", "jsma_k20",
                                                     "sparse_pgd_k20", "sparse_rs_k20",
                                                     "spatial_engstrom", "spatial_uae",
                                                     "worst_case"}
    rows = [_row("stacker_adv_mean", "none", "whitebox", 0.999), _row("stacker_adv_mean", "fgsm", "whitebox", 0.90),
            _row("stacker_adv_mean", "worst_case", "all", 0.40), _row("m1", "worst_case", "all", 0.45),
            _row("m2", "worst_case", "all", 0.10), _row("vote", "worst_case", "all", 0.9)]
    text = "\n".join(goals_section(rows, goals, {"stacker_adv_mean": "ensemble", "m1": "member",
                                                 "m2": "member", "vote": "ensemble"}))
    none_line = next(line for line in text.splitlines() if line.startswith("| clean |"))
    assert none_line.endswith("| within interval |")  # 0.999 >= 0.995 > its lower bound 0.949
    fgsm_line = next(line for line in text.splitlines() if line.startswith("| FGSM"))
    assert "missed by 0.080" in fgsm_line and "0.019" in fgsm_line  # the paper's Table VII
    assert "not run" in next(line for line in text.splitlines() if line.startswith("| L0 k=20, JSMA"))
    assert "best member `m1`" in text and "**less robust than**" in text  # 0.40 < 0.45; vote ignored
    assert "also takes the grid's other attacks" not in text
    assert "Wilson lower bound" in text  # the verdict words are explained
    assert "tried" not in text and "issue 6" not in text  # the research diary is docs/results.md
    rows += [_row("stacker_adv_mean", "pgd", "whitebox", 0.9), _row("stacker_adv_mean", "sparse_pgd", "whitebox", 0.0)]
    l0_78 = {"set": "l0", "k": 78, "direction": "both", "access": "gradient"}
    text = "\n".join(goals_section(rows, goals, {"stacker_adv_mean": "ensemble", "m1": "member"},
                                   threat_models={"sparse_pgd": l0_78}))
    assert "also takes the grid's other attacks (`pgd`)" in text  # the 78-pixel row is stress
    assert goals_section([_row("m1", "none", "whitebox", 1.0)], goals) == []
    # white-box worst case compared too; both broken says so instead of "at least as robust"
    rows = [_row("stacker_adv_mean", "worst_case", "whitebox", 0.0), _row("m1", "worst_case", "whitebox", 0.0),
            _row("stacker_adv_mean", "worst_case", "all", 0.3), _row("m1", "worst_case", "all", 0.2)]
    text = "\n".join(goals_section(rows, goals, {"stacker_adv_mean": "ensemble", "m1": "member"}))
    assert "White-box worst case: `stacker_adv_mean`" in text and "comparison shows nothing" in text
    assert "Worst case over all threats: `stacker_adv_mean`" in text and "at least as robust as" in text
    # with the stacker's own member list, a stronger model outside the stacker is not its best member
    rows = [_row("stacker_adv_mean", "worst_case", "all", 0.3), _row("m1", "worst_case", "all", 0.2),
            _row("other", "worst_case", "all", 0.9)]
    kinds = {"stacker_adv_mean": "ensemble", "m1": "member", "other": "member"}
    text = "\n".join(goals_section(rows, goals, kinds, {"stacker_adv_mean": ["m1"]}))
    assert "best member `m1`" in text and "at least as robust as" in text
    text = "\n".join(goals_section(rows, goals, kinds))  # without it: every evaluated member
    assert "best member `other`" in text and "**less robust than**" in text


def test_dense_worst_case_is_reported_beside_the_full_one():
    from advdefense.report import goals_section, robust_goals, robust_summary

    rows = [_row("stacker_adv_mean", "none", "whitebox", 1.0), _row("stacker_adv_mean", "worst_case", "all", 0.0),
            _row("stacker_adv_mean", "worst_case_dense", "whitebox", 0.9),
            _row("m1", "worst_case", "all", 0.0), _row("m1", "worst_case_dense", "whitebox", 0.7),
            _row("m1", "none", "whitebox", 1.0)]
    text = "\n".join(goals_section(rows, robust_goals(), {"stacker_adv_mean": "ensemble", "m1": "member"}))
    line = next(t for t in text.splitlines() if t.startswith("White-box worst case over the dense"))
    assert "`stacker_adv_mean` 0.900" in line and "`m1` 0.700" in line and "at least as robust as" in line
    assert "other attacks" not in text  # the dense row is not an extra attack
    summary = "\n".join(robust_summary(rows))
    assert "without the L0 attacks" in summary and "0.900 [" in summary
    assert "without the L0 attacks" not in "\n".join(robust_summary(rows[:2]))


def test_verdict_met_within_interval_missed():
    from advdefense.report import verdict

    row = {"accuracy": 0.97, "accuracy_lo": 0.94, "accuracy_hi": 0.99}
    assert verdict(row, 0.93) == "met"
    assert verdict(row, 0.94) == "met"  # the lower bound at the goal
    assert verdict(row, 0.95) == "within interval"
    assert verdict(row, 0.97) == "within interval"
    assert verdict(row, 0.98) == "missed by 0.010"
    assert verdict(None, 0.9) == "not run"


def test_goals_are_per_experiment_and_hold_no_diary():
    from advdefense.report import experiment_goals

    robust = experiment_goals("robust")
    assert robust["model"] == "stacker_adv_mean" and "tried" not in robust
    assert experiment_goals("paper_quick") is None and experiment_goals(None) is None


MODELS = [f"{p}-{d}" for p in ("none", "blur", "squeeze") for d in ("none", "fgsm", "blackbox")]
MODELS += ["stacker_adv_mean", "vote", "mean"]
CELLS = [("none", t) for t in ("transfer", "whitebox", "blackbox")] + [
    (a, t) for a in ("fgsm", "pgd", "autoattack", "jsma", "sparse_pgd", "sparse_pgd_k20",
                     "spatial_engstrom", "spatial_uae")
    for t in ("transfer", "whitebox")] + [("jsma_target", "whitebox"), ("local_search", "blackbox"),
                                          ("local_search_linf", "blackbox"),
                                          ("sparse_rs_k20", "blackbox")] + [
    ("worst_case", t) for t in ("transfer", "whitebox", "blackbox", "all")]


def grid_rows(models=tuple(MODELS), n: int = 200) -> list[dict]:
    """Rows shaped like experiment=paper_quick's grid (12 models, 27 cells each)."""
    rows = []
    for i, m in enumerate(models):
        for j, (attack, threat) in enumerate(CELLS):
            acc = round(((i * 7 + j * 3) % 20) / 20, 3)
            k = n if attack == "none" or threat == "transfer" else n // 5
            rows.append(_row(m, attack, threat, acc, k) | {
                "precision": acc, "recall": acc, "f1": acc, "accuracy_at_80": acc,
                "confusion": [[k // 2, 0], [0, k - k // 2]],
                "flags": ["fgsm_beats_pgd"] if (i, attack) == (0, "autoattack") else []})
    return rows


def _write(tmp_path, rows, **meta):
    write_json(tmp_path / "results.json", rows,
               {"n": 200, "models": sorted({r["model"] for r in rows})} | meta)


def test_report_shows_only_its_own_experiments_goals(tmp_path):
    rows = grid_rows((*MODELS, JUDGED))
    _write(tmp_path, rows, experiment="paper_quick")
    text = write_report(tmp_path, plots=False).read_text()
    assert "Experiment: `paper_quick`" in text and "Goals of" not in text
    _write(tmp_path, rows)  # a plain evaluate.py: no goals either
    assert "Goals of" not in write_report(tmp_path, plots=False).read_text()
    _write(tmp_path, rows, experiment="robust")
    text = write_report(tmp_path, plots=False).read_text()
    assert "## Goals of experiment=robust" in text and "within interval" in text
    # asked for by name (evaluate.py eval.experiment=robust, or the argument)
    _write(tmp_path, rows)
    assert "## Goals of experiment=robust" in write_report(tmp_path, plots=False,
                                                          experiment="robust").read_text()


def test_full_grid_is_folded(tmp_path):
    rows = grid_rows()
    _write(tmp_path, rows)
    lines = write_report(tmp_path, plots=False).read_text().splitlines()
    start, end = lines.index("<details>"), lines.index("</details>")
    grid = [ln for ln in lines if ln.startswith("| `")]
    inside = [ln for ln in lines[start:end] if ln.startswith("| `")]
    assert len(inside) == len(rows) and "(results.csv)" in "\n".join(lines[start - 3:start])
    assert len(grid) - len(inside) < 40  # the rest of the report is short tables


def test_console_summary_fits_40_lines_with_full_names(capsys):
    from advdefense.cli.evaluate import summary

    rows = grid_rows()
    summary(rows, "paper_quick")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) <= 40, out
    for m in MODELS:  # every model on its own line, its name not cut
        assert sum(f" {m} " in ln for ln in lines) == 1, m
    assert "…" not in out and "worst case" in out and "autoattack" in out and "sparse_rs_k20" in out
    assert "n=200" in out and "n=40" in out  # the budgeted columns say their n
    row = next(ln for ln in lines if " none-none " in ln)
    assert "⚠" in row  # none-none's autoattack row is flagged


def test_goals_summary_counts_verdicts():
    from advdefense.report import goals_summary

    rows = [_row("stacker_adv_mean", "none", "whitebox", 1.0) | {"accuracy_lo": 0.996},  # goal 0.995
            _row("stacker_adv_mean", "autoattack", "whitebox", 0.96),  # goal 0.95, lower bound 0.91
            _row("stacker_adv_mean", "fgsm", "whitebox", 0.5)]
    assert goals_summary(rows, "robust") == ("goals of experiment=robust (`stacker_adv_mean`): 1 met, "
                                             "1 within interval, 1 missed, 6 not run of 9")
    assert goals_summary(rows, "paper_quick") is None
