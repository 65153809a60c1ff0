"""Budgeted attacks (eval.attack_n): nested stratified subsets, honest rows and worst cases."""

import torch
from eval_helpers import CountingAttack, data, linear_model, run_eval

from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.grid import Grid
from advdefense.evaluation.settings import SweepConfig
from advdefense.evaluation.threats import AttackSpec, EvalModel
from advdefense.evaluation.worst_case import WORST
from advdefense.report import write_report
from advdefense.sampling import stratified_sample


def test_nested_order_prefixes_are_stratified_and_nested():
    labels = torch.tensor([0] * 30 + [1] * 10)[torch.randperm(40, generator=torch.Generator()
                                                              .manual_seed(1))]
    def nested_order(labels, seed, first):  # the grid's order of the budgeted images
        return stratified_sample(labels, seed=seed, nested=True, first=first, rng="torch",
                                 ties="position")

    order = nested_order(labels, seed=3, first=4)
    assert sorted(order.tolist()) == list(range(40))
    assert order[:4].tolist() == [0, 1, 2, 3]  # the plotted images are in every subset
    for k in range(8, 41):
        ones = int(labels[order[:k]].sum())
        assert abs(ones - k * 10 / 40) <= 4.5  # the 4 forced images aside, proportional
    assert torch.equal(nested_order(labels, seed=3, first=4), order)


class SizeAttack(CountingAttack):
    """Records the batch sizes it was called on."""

    def __init__(self):
        super().__init__(0.3)
        self.sizes = []

    def run(self, model, images, labels):
        self.sizes.append(len(images))
        return super().run(model, images, labels)


def test_budgeted_cells_and_worst_case(tmp_path):
    x, y = data(24)
    models = [EvalModel("a", linear_model(0), "da")]
    attack = SizeAttack()
    specs = [AttackSpec("big", attack, {"eps": 0.3}, ("transfer", "whitebox")),
             AttackSpec("full", CountingAttack(0.1), {"eps": 0.1}, ("whitebox",))]
    out = run_eval(models, specs, x, y, ["transfer", "whitebox"], models[0],
                          CellCache(tmp_path / "c"), tmp_path / "out", None, progress=False,
                          attack_n={"big": 10, "full": None})
    assert attack.sizes == [24, 10]  # transfer crafted on all, white-box on the budget
    rows = {(r["attack"], r["threat"]): r for r in out["rows"] if r["model"] == "a"}
    assert rows[("big", "whitebox")]["n"] == 10 and rows[("big", "transfer")]["n"] == 24
    assert rows[("full", "whitebox")]["n"] == 24 and rows[("none", "whitebox")]["n"] == 24
    assert rows[(WORST, "whitebox")]["n"] == 10 and rows[(WORST, "all")]["n"] == 10
    assert rows[(WORST, "transfer")]["n"] == 24
    assert out["meta"]["attack_n"] == {"big": 10}
    # the worst case on the subset = per-image worst over the rows restricted to it
    recs = {(c.attack, c.threat): c for c in out["cells"]}
    idx = recs[("big", "whitebox")].index
    assert len(idx) == 10 and idx[:4] == [0, 1, 2, 3]
    assert recs[("big", "whitebox")].labels == y[idx].tolist()  # each cell carries its labels
    full_pred = torch.tensor(recs[("full", "whitebox")].pred)[idx]
    robust = ((torch.tensor(recs[("big", "whitebox")].pred) == y[idx])
              & (full_pred == y[idx])
              & (torch.tensor(recs[("none", "whitebox")].pred)[idx] == y[idx]))
    assert rows[(WORST, "whitebox")]["accuracy"] == robust.double().mean().item()
    report = write_report(tmp_path / "out", plots=False).read_text()
    assert "`big` on 10" in report


def test_grid_without_budget_has_no_index(tmp_path):
    x, y = data(8)
    grid = Grid(x, y, CellCache(tmp_path), "s")
    rec = grid.cell(EvalModel("a", linear_model(0), "d"),
                    AttackSpec("x", CountingAttack(), {}, ("whitebox",)), "whitebox")
    assert rec.index is None and rec.n == 8


def test_attack_n_null_clears_the_default_budget():
    """``eval.attack_n=null`` runs every attack on all n; ``={}`` would merge into the default."""
    from helpers import ROOT
    from hydra import compose, initialize_config_dir

    from advdefense.evaluation.settings import attack_budget

    cpu = torch.device("cpu")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        default = compose("evaluate")
        cleared = compose("evaluate", overrides=["eval.attack_n=null"])
    assert attack_budget(default.eval, 1986, cpu)["pgd"] == 795  # ceil(0.4 * 1986)
    assert attack_budget(cleared.eval, 1986, cpu) == {}


def test_on_cuda_the_budget_is_attack_n_cuda():
    """On a CUDA device ``eval.attack_n_cuda`` (default null: every row on all n) replaces
    ``eval.attack_n``."""
    import torch
    from helpers import ROOT
    from hydra import compose, initialize_config_dir

    from advdefense.evaluation.settings import attack_budget

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        default = compose("evaluate")
        capped = compose("evaluate", overrides=["eval.attack_n_cuda={sparse_rs_k20: 500}"])
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert attack_budget(default.eval, 1986, cpu)["sparse_rs_k20"] == 10
    assert attack_budget(default.eval, 1986, cuda) == {}
    assert attack_budget(capped.eval, 1986, cuda) == {"sparse_rs_k20": 500}


def test_sweep_n_is_a_count_or_a_fraction_of_n():
    import pytest

    from advdefense.checks import ConfigError
    from advdefense.evaluation.settings import sweep_n

    assert sweep_n(200) == (200, 0)
    assert sweep_n(0.1, 64) == (0.1, 64)
    for bad in (0, -3, 1.0, 1.5, True, "all"):
        with pytest.raises(ConfigError, match="eval.sweep.n"):
            sweep_n(bad)
    with pytest.raises(ConfigError, match="eval.sweep.min_n"):
        sweep_n(0.1, -1)


def test_sweep_fraction_runs_on_its_share_of_the_images(tmp_path):
    x, y = data(40)
    models = [EvalModel("lin", linear_model(), "d0")]
    sweep = SweepConfig(n=0.25, min_n=4, eps=(0.0, 0.3), threats=("whitebox",),
                        factories={"fgsm": (lambda e: CountingAttack(e), {"k": 1})},
                        angles=(0,), shifts=(0,), gradient_n=4)
    out = run_eval(models, [], x, y, ["whitebox"], None, CellCache(tmp_path / "c"),
                          tmp_path / "out", sweep=sweep, progress=False)
    assert {r["n"] for r in out["sweeps"]["eps"]} == {10}  # ceil(0.25 * 40), above min_n
    sweep.min_n = 16
    out = run_eval(models, [], x, y, ["whitebox"], None, CellCache(tmp_path / "c"),
                          tmp_path / "out", sweep=sweep, progress=False)
    assert {r["n"] for r in out["sweeps"]["eps"]} == {16}
