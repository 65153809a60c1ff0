"""Seeds (advdefense.evaluation.seeds): ``<name>-s<seed>`` rows -> mean and spread, and the
report's "Seeds" section."""

from __future__ import annotations

import pytest

from advdefense.evaluation.seeds import seed_groups, seeds_section, split_seed


def test_seed_groups_mean_and_spread():
    rows = [{"model": f"none-fgsm-s{s}", "attack": "fgsm", "threat": "whitebox",
             "accuracy": acc, "f1": acc} for s, acc in [(1, 0.8), (2, 0.9), (3, 1.0)]]
    rows += [{"model": "stacker", "attack": "fgsm", "threat": "whitebox", "accuracy": 0.5},
             {"model": "blur-fgsm-s1", "attack": "fgsm", "threat": "whitebox", "accuracy": 0.5}]
    assert split_seed("none-fgsm-s12") == ("none-fgsm", 12) and split_seed("stacker") is None
    (group,) = seed_groups(rows)  # blur-fgsm has one seed only, stacker none
    assert group["model"] == "none-fgsm" and group["seeds"] == [1, 2, 3]
    assert group["accuracy_mean"] == pytest.approx(0.9)
    assert group["accuracy_std"] == pytest.approx(0.1)
    text = "\n".join(seeds_section(rows))
    assert "## Seeds" in text and "0.900 ± 0.100" in text
    assert seeds_section(rows[3:]) == []


def test_report_has_a_seeds_section(tmp_path):
    from advdefense.evaluation.results import COLUMNS, write_json
    from advdefense.report import write_report

    rows = [{**{c: a for c in COLUMNS}, "model": f"none-none-s{s}", "attack": "clean",
             "threat": "whitebox", "n": 10, "confusion": [[5, 0], [0, 5]], "flags": []}
            for s, a in [(1, 0.9), (2, 0.8)]]
    write_json(tmp_path / "results.json", rows, {"n": 10})
    report = write_report(tmp_path, plots=False).read_text()
    assert "## Seeds" in report and "0.850 ± 0.071" in report
