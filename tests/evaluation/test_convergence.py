"""Convergence runs and the ``attack_not_converged`` check: a larger budget that finds more
flags the row; a converged attack passes; only the images the cell left robust are rerun."""

from __future__ import annotations

import torch
from eval_helpers import run_eval
from torch import nn

from advdefense.attacks.base import AttackResult, predict
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.convergence import convergence_runs
from advdefense.evaluation.grid import Grid
from advdefense.evaluation.sanity import apply_flags, convergence_checks
from advdefense.evaluation.settings import SanityConfig
from advdefense.evaluation.threats import AttackSpec, EvalModel
from advdefense.evaluation.worst_case import WORST


class Brightness(nn.Module):
    """Predicts 1 where the mean pixel is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1).mean(1) - 0.5) * 100
        return torch.stack([torch.zeros_like(z), z], 1)


class Budgeted:
    """Fools (whitens) images whose marker pixel is below ``reach(steps, seed)``; records how
    many images each call saw. ``scaled`` follows APGD's signature."""

    def __init__(self, steps: int = 2, seed: int = 0, grows: bool = True,
                 seen: list[int] | None = None) -> None:
        self.steps, self.seed, self.grows = steps, seed, grows
        self.seen = [] if seen is None else seen

    def reach(self) -> float:
        return 0.1 * self.steps if self.grows else 0.3

    def scaled(self, steps: int = 1, restarts: int = 1, seed: int = 0) -> Budgeted:
        return Budgeted(self.steps * steps, self.seed + seed, self.grows, self.seen)

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
            need_success: bool = True) -> AttackResult:
        self.seen.append(len(images))
        fool = images[:, 0, 0, 0] < self.reach()
        out = torch.where(fool[:, None, None, None], torch.ones_like(images), images)
        return AttackResult(out, predict(model, out) != labels, torch.ones(len(images)).long())

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        return self.run(model, images, labels).images


def _markers(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((n, 1, 28, 28), 0.1)
    x[:, 0, 0, 0] = torch.arange(n) / n
    return x, torch.zeros(n, dtype=torch.int64)


def _runs(tmp_path, attack: Budgeted, attack_n: int | None = None, n: int = 200):
    x, y = _markers()
    model = EvalModel("m", Brightness(), "dm")
    spec = AttackSpec("autoattack", attack, {"grows": attack.grows}, ("whitebox",))
    cache = CellCache(tmp_path / "cache")
    grid = Grid(x, y, cache, "sub", attack_n={"autoattack": attack_n} if attack_n else None,
                n_examples=0)
    record = grid.cell(model, spec, "whitebox")
    return convergence_runs([model], [spec], [record], x, cache, n), attack.seen


def test_more_iterations_finding_more_is_flagged(tmp_path):
    (run,), seen = _runs(tmp_path, Budgeted(steps=2))
    # steps 2 fools markers < 0.2 (4 of 20); doubled steps fool < 0.4 (8 of 20)
    assert run["accuracy"] == 0.8 and run["accuracy_steps"] == 0.6
    assert run["accuracy_restarts"] == 0.8  # reseeding does not help this attack
    assert seen == [20, 16, 16]  # the reruns see only the 16 images the cell left robust
    (check,) = convergence_checks([run], tol=0.01)
    assert check["check"] == "attack_not_converged" and not check["passed"]
    assert check["attack"] == "autoattack" and check["threat"] == "whitebox"


def test_a_converged_attack_passes_and_runs_are_cached(tmp_path):
    (run,), _ = _runs(tmp_path, Budgeted(grows=False))
    assert run["accuracy"] == run["accuracy_steps"] == run["accuracy_restarts"] == 0.7
    assert convergence_checks([run])[0]["passed"]
    (again,), seen = _runs(tmp_path, Budgeted(grows=False))
    assert again == run and seen == []  # the cell and the runs both come from the cache


def test_budgeted_cells_use_their_own_images(tmp_path):
    (run,), seen = _runs(tmp_path, Budgeted(steps=2), attack_n=10, n=6)
    assert run["n"] == 6 and seen[0] == 10 and len(seen) == 3


def test_tolerance_edge_and_row_flags():
    runs = [{"model": "a", "attack": "autoattack", "n": 200, "accuracy": 0.5,
             "accuracy_steps": 0.495, "accuracy_restarts": 0.5},
            {"model": "b", "attack": "autoattack", "n": 200, "accuracy": 0.5,
             "accuracy_steps": 0.5, "accuracy_restarts": 0.49}]
    checks = convergence_checks(runs, tol=0.01)
    assert [c["passed"] for c in checks] == [True, False]
    rows = [{"model": m, "attack": a, "threat": t, "accuracy": 0.5}
            for m in ("a", "b") for a, t in (("autoattack", "whitebox"), ("pgd", "whitebox"),
                                             ("autoattack", "transfer"), (WORST, "whitebox"))]
    apply_flags(rows, checks)
    flagged = {(r["model"], r["attack"], r["threat"]) for r in rows if r["flags"]}
    assert flagged == {("b", "autoattack", "whitebox"), ("b", WORST, "whitebox")}


def test_pipeline_runs_the_check_when_enabled(tmp_path):
    x, y = _markers()
    spec = AttackSpec("autoattack", Budgeted(steps=2), {"k": 1}, ("whitebox",))
    model = EvalModel("m", Brightness(), "dm")
    out = run_eval([model], [spec], x, y, ["whitebox"], None, CellCache(tmp_path / "c"),
                          tmp_path / "out", sanity=SanityConfig(convergence_n=200),
                          progress=False)
    assert [c["passed"] for c in out["checks"] if c["check"] == "attack_not_converged"] == [False]
    row = next(r for r in out["rows"] if r["attack"] == "autoattack")
    assert "attack_not_converged" in row["flags"]
    off = run_eval([model], [spec], x, y, ["whitebox"], None, CellCache(tmp_path / "d"),
                          tmp_path / "out2", progress=False)
    assert not [c for c in off["checks"] if c["check"] == "attack_not_converged"]
