"""The per-cell cache (a second run recomputes nothing) and atomic writes."""

import os

import pytest
from eval_helpers import CountingAttack, data, linear_model

from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.grid import Grid, run_grid
from advdefense.evaluation.threats import AttackSpec, EvalModel


def _run(tmp_path, attack, enabled=True):
    x, y = data()
    models = [EvalModel("a", linear_model(0), "da"), EvalModel("b", linear_model(1), "db")]
    grid = Grid(x, y, CellCache(tmp_path / "cache", enabled), "sub", surrogate=models[0])
    spec = AttackSpec("count", attack, {"eps": attack.eps}, ("transfer", "whitebox"))
    return run_grid(grid, models, [spec], ["transfer", "whitebox"], progress=False), grid


def test_second_run_recomputes_nothing(tmp_path):
    first = CountingAttack()
    rec1, _ = _run(tmp_path, first)
    assert first.calls == 3  # one transfer craft on the surrogate + one white-box per model
    second = CountingAttack()
    rec2, grid = _run(tmp_path, second)
    assert second.calls == 0 and grid.attack_calls == 0
    assert [r["pred"] for r in rec1] == [r["pred"] for r in rec2]
    third = CountingAttack()
    _run(tmp_path, third, enabled=False)  # eval.cache=false recomputes
    assert third.calls == 3


def test_changed_attack_config_is_a_new_cell(tmp_path):
    _run(tmp_path, CountingAttack(0.3))
    other = CountingAttack(0.1)
    _run(tmp_path, other)
    assert other.calls == 3


def test_crash_mid_write_leaves_no_half_file(tmp_path, monkeypatch):
    cache = CellCache(tmp_path)
    cache.put("k", {"pred": [1, 2]})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put("k", {"pred": [3, 4, 5]})
    with pytest.raises(KeyboardInterrupt):
        cache.put("new", {"pred": [3]})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.json"]  # no tmp, no half file
    assert cache.get("k") == {"pred": [1, 2]} and cache.get("new") is None


def test_unreadable_cache_file_is_recomputed(tmp_path):
    cache = CellCache(tmp_path)
    (tmp_path / "bad.json").write_text("{truncated")
    assert cache.get("bad") is None


def test_attack_records_count_the_pixels_each_example_changed(tmp_path):
    from advdefense.attacks import SparsePGD

    x, y = data()
    model = EvalModel("a", linear_model(0), "da")
    grid = Grid(x, y, CellCache(tmp_path / "cache", True), "sub")
    rec = grid.cell(model, AttackSpec("sparse_pgd", SparsePGD(k=3, steps=2), {"k": 3},
                                      ("whitebox",)), "whitebox")
    assert len(rec["l0"]) == len(y) and max(rec["l0"]) <= 3 and max(rec["l0"]) > 0
    clean = grid.cell(model, AttackSpec("none", None), "whitebox")
    assert "l0" not in clean
