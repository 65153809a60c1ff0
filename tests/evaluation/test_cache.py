"""The per-cell cache (a second run recomputes nothing) and atomic writes."""

import os

import pytest
import torch
from eval_helpers import CountingAttack, data, linear_model

from advdefense.evaluation.cache import CODE_SOURCES, CellCache, code_version, source_digest
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
    assert [r.pred for r in rec1] == [r.pred for r in rec2]
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
    assert len(rec.l0) == len(y) and max(rec.l0) <= 3 and max(rec.l0) > 0
    clean = grid.cell(model, AttackSpec("none", None), "whitebox")
    assert clean.l0 is None


def _source_copy(tmp_path):
    import shutil
    from pathlib import Path

    import advdefense

    src, dst = Path(advdefense.__file__).parent, tmp_path / "pkg"
    for name in CODE_SOURCES:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / name, dst / name)
    return dst


def test_changing_an_attack_source_changes_the_key(tmp_path, monkeypatch):
    """The cell key holds the code version: edit an attack's source and every cell is new."""
    import advdefense.evaluation.grid as grid_module

    pkg = _source_copy(tmp_path)
    monkeypatch.setattr(grid_module, "code_version", lambda: source_digest(pkg))
    before = source_digest(pkg)
    _run(tmp_path, CountingAttack())
    pgd = pkg / "attacks" / "pgd.py"
    pgd.write_text(pgd.read_text() + "\n# an edit\n")
    assert source_digest(pkg) != before
    again = CountingAttack()
    _run(tmp_path, again)
    assert again.calls == 3  # nothing reused: the transfer images and both white-box cells
    unchanged = CountingAttack()
    _run(tmp_path, unchanged)
    assert unchanged.calls == 0


def test_code_version_covers_sources_and_libraries(tmp_path):
    import kornia
    import torch

    pkg = _source_copy(tmp_path)
    digest = source_digest(pkg)
    (pkg / "attacks" / "new_attack.py").write_text("X = 1\n")
    assert source_digest(pkg) != digest  # a new attack file counts too
    version = code_version()
    assert torch.__version__ in version and kornia.__version__ in version
    with pytest.raises(FileNotFoundError, match="nets.py"):
        (pkg / "nets.py").unlink()
        source_digest(pkg)


def test_two_names_of_one_model_file_keep_their_names(tmp_path):
    """Cells are keyed by the weights; a second registry name of the same file reuses them
    under its own name (rows never collapse onto the first name)."""
    x, y = data(8)
    net = linear_model(0)
    a, b = EvalModel("a", net, "same"), EvalModel("b", net, "same")
    grid = Grid(x, y, CellCache(tmp_path), "s")
    spec = AttackSpec("x", CountingAttack(), {}, ("whitebox",))
    cells = run_grid(grid, [a, b], [spec], ["whitebox"], progress=False)
    assert [(c.model, c.attack) for c in cells] == [("a", "none"), ("b", "none"), ("a", "x"),
                                                     ("b", "x")]
    assert cells[0].pred == cells[1].pred and grid.attack_calls == 1


def test_other_images_with_the_same_labels_are_new_cells(tmp_path):
    """The cells of a run are keyed by the evaluated images themselves: another subset of the
    same size and labels (another seed, another data source) reuses nothing."""
    from eval_helpers import run_eval

    y = data(16)[1]
    spec = AttackSpec("count", None, {}, ("whitebox",))

    def run(images, folder):
        attack = CountingAttack()
        spec.attack = attack
        run_eval([EvalModel("a", linear_model(0), "da")], [spec], images, y, ["whitebox"],
                 None, CellCache(tmp_path / "cache"), tmp_path / folder)
        return attack.calls

    x1, x2 = data(16, seed=0)[0], data(16, seed=1)[0]
    assert torch.equal(data(16, seed=1)[1], y)  # same size, same labels in the same order
    assert run(x1, "first") == 1
    assert run(x1, "again") == 0  # the same images: cached
    assert run(x2, "other") == 1  # other pixels: computed, not the first run's cell
