"""H: a rerun assembles the same results from the cache without computing anything."""

import json

import pytest
from eval_helpers import CountingAttack, data, linear_model, run_eval

from advdefense.attacks import PGD, SparsePGD
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.settings import SanityConfig, SweepConfig
from advdefense.evaluation.threats import AttackSpec, EvalModel

TIMING = {"seconds", "timings", "cache_hits", "attack_calls"}


def _results(out):
    payload = json.loads((out / "results.json").read_text())
    meta = {k: v for k, v in payload["meta"].items() if k not in TIMING}
    return meta, [{k: v for k, v in r.items() if k != "seconds"} for r in payload["rows"]]


def _run(tmp_path, folder, models, cache="shared"):
    x, y = data(16)
    specs = [AttackSpec("linf", PGD(0.2, 0.05, 3), {"eps": 0.2}, ("transfer", "whitebox")),
             AttackSpec("l0", SparsePGD(k=5, steps=2, restarts=1), {"k": 5}, ("whitebox",))]
    sweep = SweepConfig(n=8, eps=(0.0, 0.3), threats=("whitebox", "transfer"),
                        factories={"f": (lambda e: CountingAttack(e), {"k": 1})},
                        angles=(-5, 0, 5), shifts=(-1, 0, 1), gradient_n=4)
    surrogate = EvalModel("sur", linear_model(9), "ds")
    return run_eval(models, specs, x, y, ["transfer", "whitebox"], surrogate,
                    CellCache(tmp_path / cache), tmp_path / folder, sweep,
                    SanityConfig(convergence_n=8), attack_n={"l0": 6})


@pytest.mark.slow
def test_cached_rerun_computes_nothing_and_writes_the_same_results(tmp_path, monkeypatch):
    import advdefense.evaluation.convergence as convergence
    import advdefense.evaluation.grid as grid
    import advdefense.evaluation.pipeline as pipeline

    models = [EvalModel("a", linear_model(0), "da"), EvalModel("b", linear_model(1), "db")]
    first = _run(tmp_path, "first", models, cache="own")  # the reference, computed at once
    # a multirun over models fills the shared cache, one model per job
    _run(tmp_path, "job_a", models[:1])
    _run(tmp_path, "job_b", models[1:])

    def boom(*args, **kwargs):
        raise AssertionError("a cached rerun computed something")

    for module, name in ((grid, "craft"), (grid, "predict_logits"), (pipeline, "spatial_sweep"),
                         (pipeline, "gradient_checks"), (convergence, "_run")):
        monkeypatch.setattr(module, name, boom)
    again = _run(tmp_path, "again", models)
    assert _results(tmp_path / "again") == _results(tmp_path / "first")
    assert again["sweeps"] == first["sweeps"] and again["checks"] == first["checks"]
    assert again["meta"]["attack_calls"] == 0
    with pytest.raises(AssertionError, match="computed something"):  # the patch is live
        _run(tmp_path, "fresh", [EvalModel("c", linear_model(2), "dc")])


def test_report_plots_are_drawn_once_per_data(tmp_path, monkeypatch):
    """With a plot cache, a report of unchanged data copies its plots instead of drawing."""

    from advdefense.evaluation import plots
    from advdefense.evaluation.cells import Cell
    from advdefense.evaluation.results import to_row, write_json
    from advdefense.report import write_report

    def run(folder, seconds):
        rows = [to_row(Cell("m", "none", "all", [0, 1, 1, 0], [0, 1, 0, 0], [1.0, 2.0, 1.0, 3.0],
                            seconds=seconds))]
        write_json(tmp_path / folder / "results.json", rows, {"n": 4, "models": ["m"]})
        return write_report(tmp_path / folder, plot_cache=tmp_path / "plots_cache")

    run("a", 1.0)
    first = (tmp_path / "a" / "plots" / "confusion.png").read_bytes()
    monkeypatch.setattr(plots, "plot_confusions", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("drawn again")))
    run("b", 2.0)  # only a timing changed: the stored figure is copied
    assert (tmp_path / "b" / "plots" / "confusion.png").read_bytes() == first
    assert "![confusion](plots/confusion.png)" in (tmp_path / "b" / "report.md").read_text()
    with pytest.raises(AssertionError, match="drawn again"):
        rows = [to_row(Cell("m", "none", "all", [0, 1], [1, 1], [1.0, 1.0]))]  # new data
        write_json(tmp_path / "c" / "results.json", rows, {"n": 2, "models": ["m"]})
        write_report(tmp_path / "c", plot_cache=tmp_path / "plots_cache")
