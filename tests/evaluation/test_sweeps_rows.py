"""evaluation/sweeps.py: the eps and spatial sweeps' rows, ranges and cache reuse (public behaviour)."""

from __future__ import annotations

import pytest
import torch

from advdefense.attacks import FGSM
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.grid import Grid
from advdefense.evaluation.sweeps import eps_sweep, spatial_sweep
from advdefense.evaluation.threats import EvalModel

ANGLES, SHIFTS = [-30, 0, 30, 90], [-3, 0, 3]


@pytest.fixture(scope="module")
def digits(mnist67_test):
    x, y = mnist67_test
    return x[::40][:48], y[::40][:48]


@pytest.fixture(scope="module")
def cnn(undefended_cnn):
    return EvalModel("none-none", undefended_cnn, "digest-of-none-none")


def test_spatial_sweep_rows_per_model_and_transform(cnn, digits):
    x, y = digits
    other = EvalModel("blank", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2)), "b")
    rows = spatial_sweep([cnn, other], x, y, ANGLES, SHIFTS)
    assert len(rows) == 2 * (len(ANGLES) + 2 * len(SHIFTS))
    assert {r["kind"] for r in rows} == {"angle", "dx", "dy"}
    assert [r["value"] for r in rows if r["model"] == "blank" and r["kind"] == "dy"] == SHIFTS
    assert all(r["n"] == len(y) and 0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_spatial_sweep_at_zero_is_the_clean_accuracy_and_a_quarter_turn_hurts(cnn, digits):
    x, y = digits
    clean = float((cnn.module(x).argmax(1) == y).double().mean())
    rows = {(r["kind"], r["value"]): r["accuracy"] for r in spatial_sweep([cnn], x, y, ANGLES,
                                                                           SHIFTS)}
    assert clean > 0.9
    for kind in ("angle", "dx", "dy"):
        assert rows[(kind, 0.0)] == pytest.approx(clean, abs=1 / len(y))
    assert rows[("angle", 90.0)] < clean - 0.2
    assert rows[("dx", 3.0)] <= clean + 1 / len(y) and rows[("angle", 30.0)] <= clean + 1 / len(y)


def test_eps_sweep_rows_and_accuracy_falling_with_eps(cnn, digits, tmp_path):
    x, y = digits
    grid = Grid(x, y, CellCache(tmp_path), "sweep-subset")
    factories = {"fgsm": (lambda eps: FGSM(eps=eps), {"name": "fgsm"})}
    eps = [0.0, 0.1, 0.3, 1.0]
    rows = eps_sweep(grid, [cnn], factories, eps, ["whitebox"], progress=False)
    (clean,) = [r for r in rows if r["eps"] is None]
    assert clean["attack"] == "clean" and clean["threat"] == "any" and clean["accuracy"] > 0.9
    curve = [r for r in rows if r["eps"] is not None]
    assert [(r["attack"], r["threat"], r["eps"]) for r in curve] == [
        ("fgsm", "whitebox", e) for e in eps]
    acc = [r["accuracy"] for r in curve]
    assert acc[0] == pytest.approx(clean["accuracy"])  # eps 0 is a real call that changes nothing
    assert acc[-1] <= acc[1] <= acc[0] and acc[-1] < 0.2
    assert all(r["n"] == len(y) and r["model"] == "none-none" for r in rows)
    calls = grid.attack_calls
    assert eps_sweep(grid, [cnn], factories, eps, ["whitebox"], progress=False) == rows
    assert grid.attack_calls == calls  # a rerun comes from the cache
