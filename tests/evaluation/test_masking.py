"""Gradient variants of white-box gradient attacks: squeeze surrogates and the vote's members' margins."""

from __future__ import annotations

import json

import pytest
import torch
from eval_helpers import data, linear_model, run_eval
from helpers import train_cnn
from torch import nn

from advdefense.attacks.pgd import PGD
from advdefense.ensembles import MajorityVote, MemberMargins
from advdefense.evaluation.cache import CellCache
from advdefense.evaluation.cells import Cell
from advdefense.evaluation.masking import (
    SQUEEZE_CHECK,
    VOTE_CHECK,
    GradientVariants,
    SqueezeSurrogate,
    gradient_variants,
    masking_checks,
)
from advdefense.evaluation.settings import SanityConfig
from advdefense.evaluation.threats import AttackSpec, EvalModel
from advdefense.preprocess import FeatureSqueeze
from advdefense.registry import CheckedModel


class PatchReadout(nn.Module):
    """Logits from the fraction of a 12 x 12 patch that is on: class 1 when over half is."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(28, 28)
        w[8:20, 8:20] = 1.0
        self.register_buffer("w", w.flatten())

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        on = (q.flatten(1) * self.w).sum(1) / self.w.sum()
        return torch.stack([0.5 - on, on - 0.5], 1) * 10


def patch_images(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A dim patch (0.21-0.25): squeezed to all-off (class 0); eps 0.3 can lift it past 0.5."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, 28, 28)
    x[:, 0, 8:20, 8:20] = 0.21 + 0.04 * torch.rand(n, 12, 12, generator=g)
    return x, torch.zeros(n, dtype=torch.long)


def squeezed() -> nn.Module:
    return nn.Sequential(FeatureSqueeze(3, 1), PatchReadout()).eval()


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.factor


class FlipRows(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-2)


def names(model: nn.Module) -> list[str]:
    return [v.name for v in gradient_variants(model)]


def test_variants_dispatch_on_type_never_on_names():
    plain, sq = linear_model(), squeezed()
    assert names(plain) == ["own/straight_through"]
    assert names(nn.Sequential(FeatureSqueeze(1, None), plain)) == ["own/straight_through"]
    assert names(sq) == ["own/straight_through", "own/median_mean+sigmoid_t0.3"]
    vote = MajorityVote({"squeeze": plain, "b": linear_model(1), "c": linear_model(2)})
    assert names(vote) == ["own/straight_through", "members/straight_through"]
    mixed = CheckedModel(MajorityVote({"a": sq, "b": plain, "c": linear_model(2)}), "x", "ensemble")
    assert names(mixed) == ["own/straight_through", "members/straight_through",
                            "own/median_mean+sigmoid_t0.3", "members/median_mean+sigmoid_t0.3"]
    assert [v.name for v in gradient_variants(mixed, (), vote_members=False)] == [
        "own/straight_through"]


def test_plain_model_gets_the_wrapped_attacks_own_result():
    x, y = data(8)
    pgd = PGD(0.1, 0.02, 5)
    plain = linear_model()
    a, b = GradientVariants(pgd).run(plain, x, y), pgd.run(plain, x, y)
    assert torch.equal(a.images, b.images) and "variants" not in a.info


def test_surrogate_finds_what_straight_through_misses_on_a_constructed_squeeze():
    """Without a random start, straight-through PGD moves only each window's median pixel and
    never lifts the patch; through the window mean every pixel rises."""
    x, y = patch_images()
    model = squeezed()
    pgd = PGD(0.3, 0.02, 20, random_start=False)
    assert not pgd.run(model, x, y).success.any()
    result = GradientVariants(pgd).run(model, x, y)
    assert result.success.all()
    assert torch.equal(model(result.images).argmax(1), torch.ones_like(y))
    assert ((result.images - x).abs() <= 0.3 + 1e-6).all()
    acc = {v["name"]: (v["accuracy"], v["won"]) for v in result.info["variants"]}
    assert acc == {"own/straight_through": (1.0, 0), "own/median_mean+sigmoid_t0.3": (0.0, 16)}
    # a steep sigmoid on the rounding alone does not help here: the median's gradient misleads
    only_rounding = GradientVariants(pgd, (SqueezeSurrogate("exact", 0.1),)).run(model, x, y)
    assert not only_rounding.success.any()


def test_squeeze_flag_fires_and_the_pgd_row_is_the_worst_while_plain_models_stay_silent(tmp_path):
    x, y = patch_images()
    x2, _ = data(16)
    x, y = torch.cat([x, x2 * 0.2]), torch.cat([y, torch.zeros(16, dtype=torch.long)])
    models = [EvalModel("toy-squeeze", squeezed(), "d1"), EvalModel("plain", linear_model(), "d2")]
    specs = [AttackSpec("pgd", PGD(0.3, 0.02, 20, random_start=False), {"eps": 0.3}, ("whitebox",))]
    out = run_eval(models, specs, x, y, ["whitebox"], None, CellCache(tmp_path / "c"),
                          tmp_path / "out", progress=False)
    checks = [c for c in out["checks"] if c["check"] in (SQUEEZE_CHECK, VOTE_CHECK)]
    assert [(c["model"], c["passed"]) for c in checks] == [("toy-squeeze", False)]
    rows = {(r["model"], r["attack"]): r for r in out["rows"] if r["threat"] == "whitebox"}
    row = rows[("toy-squeeze", "pgd")]
    assert row["accuracy"] <= 0.5 and SQUEEZE_CHECK in row["flags"]
    assert row["strongest_variant"] == "own/median_mean+sigmoid_t0.3"
    assert SQUEEZE_CHECK in rows[("toy-squeeze", "worst_case")]["flags"]
    assert "gradient_variants" not in rows[("plain", "pgd")] and not rows[("plain", "pgd")]["flags"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert any(r.get("gradient_variants") for r in saved["rows"])
    # switched off: straight-through only, the patch stays off
    off = run_eval(models[:1], specs, x, y, ["whitebox"], None, CellCache(tmp_path / "c2"),
                          tmp_path / "out2", sanity=SanityConfig(squeeze_surrogates=(),
                                                                 vote_members=False),
                          progress=False)
    assert [r["accuracy"] for r in off["rows"] if r["attack"] == "pgd"] == [1.0]


def cell(info: dict, n: int = 100, model: str = "m") -> Cell:
    return Cell(model, "pgd", "whitebox", [0] * n, [0] * n, [1.0] * n, method="pgd", info=info)


def record(variants: list[tuple[str, str, dict | None, float]]) -> Cell:
    return cell({"variants": [{"name": n, "target": t, "squeeze": s, "accuracy": a, "won": 0}
                              for n, t, s, a in variants]})


def test_masking_checks_compare_each_variant_with_its_straight_through_counterpart():
    sur = {"median": "mean", "temperature": 0.3}
    close = record([("own/st", "own", None, 0.90), ("own/sur", "own", sur, 0.895)])
    beaten = record([("own/st", "own", None, 0.90), ("own/sur", "own", sur, 0.85)])
    vote = record([("own/st", "own", None, 0.90), ("members/st", "members", None, 0.60)])
    assert [c["passed"] for c in masking_checks([close, beaten, vote], tol=0.01)] == [
        True, False, False]
    assert [c["check"] for c in masking_checks([beaten, vote])] == [SQUEEZE_CHECK, VOTE_CHECK]
    assert masking_checks([cell({}, 1)]) == []


@pytest.fixture(scope="module")
def vote_of_trained_members(undefended_cnn, mnist67_train) -> MajorityVote:
    """Two undefended CNNs and a confident member that reads the image upside down: the
    vote's soft part saturates, and the tie-break's gradient is the confident member's."""
    a = undefended_cnn
    b = train_cnn(*mnist67_train, epochs=1, seed=1, n=2000)
    return MajorityVote({"a": a, "b": b, "c": nn.Sequential(FlipRows(), a, Scale(50.0))}).eval()


def test_vote_members_margins_beat_its_own_output_and_the_row_keeps_the_worst(
        vote_of_trained_members, mnist67_test):
    vote = vote_of_trained_members
    x, y = mnist67_test[0][:64], mnist67_test[1][:64]
    pgd = PGD(0.2, 0.05, 10, early_stop=True)
    own, members = pgd.run(vote, x, y), pgd.run(MemberMargins(vote), x, y)
    acc_own = 1 - own.success.double().mean()
    acc_members = 1 - members.success.double().mean()
    assert acc_members <= acc_own - 0.1       # measured: 0.50 vs 0.94
    result = GradientVariants(pgd, ()).run(vote, x, y)
    assert torch.equal(result.success, own.success | members.success)
    with torch.no_grad():
        assert torch.equal(vote(result.images).argmax(1) != y, result.success)
    summary = {v["name"]: v for v in result.info["variants"]}
    assert summary["own/straight_through"]["accuracy"] == pytest.approx(float(acc_own))
    assert summary["members/straight_through"]["accuracy"] == pytest.approx(float(acc_members))
    assert sum(v["won"] for v in summary.values()) == int(result.success.sum())
    assert summary["members/straight_through"]["won"] >= int((members.success & ~own.success).sum())
    check = masking_checks([cell(result.info, 64, "vote")])
    assert [(c["check"], c["passed"]) for c in check] == [(VOTE_CHECK, False)]


def test_eval_config_builds_the_variants_and_names_bad_keys(tmp_path):
    from helpers import compose

    from advdefense.checks import ConfigError
    from advdefense.evaluation.masking import DEFAULT_SQUEEZE_SURROGATES
    from advdefense.evaluation.settings import sanity_config

    cfg = sanity_config(compose("evaluate", [], tmp_path, tmp_path).eval.sanity)
    assert tuple(cfg.squeeze_surrogates) == DEFAULT_SQUEEZE_SURROGATES and cfg.vote_members
    off = sanity_config(compose("evaluate", ["eval.sanity.squeeze_surrogates=[]",
                                             "eval.sanity.vote_members=false"], tmp_path,
                                tmp_path).eval.sanity)
    assert off.squeeze_surrogates == () and off.vote_members is False
    for override, expected in (
            ("eval.sanity.squeeze_surrogates=[{median: max}]", "median"),
            ("eval.sanity.squeeze_surrogates=[{median: mean, temperature: -1}]", "temperature"),
            ("eval.sanity.squeeze_surrogates=[{median: exact, temperature: null}]", "always runs"),
            ("eval.sanity.squeeze_surrogates=[{temp: 1}]", "keys median")):
        with pytest.raises(ConfigError, match=r"eval.sanity.squeeze_surrogates\[0\]") as err:
            sanity_config(compose("evaluate", [override], tmp_path, tmp_path).eval.sanity)
        assert expected in str(err.value)


def test_every_gradient_attack_is_wrapped_by_its_threat_model_never_by_its_name():
    """FGSM, PGD, APGD, the autoattack cascade, JSMA and sparse PGD get the variants whatever
    their rows are called; query-only and grid attacks do not; rescalable ones stay rescalable
    (the convergence runs double every variant's budget)."""
    from advdefense.attacks.apgd import APGD
    from advdefense.attacks.cascade import Cascade
    from advdefense.attacks.fgsm import FGSM
    from advdefense.attacks.jsma import JSMA
    from advdefense.attacks.local_search import LocalSearch
    from advdefense.attacks.sparse_pgd import SparsePGD
    from advdefense.attacks.sparse_rs import SparseRS
    from advdefense.attacks.spatial import SpatialGrid
    from advdefense.evaluation.masking import RescalableVariants, with_gradient_variants

    aa = Cascade({"ce": APGD(0.3, 10), "margin": APGD(0.3, 10, loss="margin", seed=1)}, eps=0.3)
    attacks = {"a": FGSM(0.3), "b": PGD(0.3, 0.01, 5), "c": APGD(0.3, 10), "d": aa,
               "e": JSMA(k=20), "f": SparsePGD(k=20, steps=5), "g": SparseRS(k=20, max_queries=50),
               "h": SpatialGrid(), "i": LocalSearch()}
    specs = [AttackSpec(name, a, {}, ("whitebox",)) for name, a in attacks.items()]
    wrapped = {s.name: s for s in with_gradient_variants(specs)}
    assert {n for n, s in wrapped.items() if isinstance(s.attack, GradientVariants)} == set("abcdef")
    assert all("gradient_variants" in wrapped[n].config for n in "abcdef")
    assert {n for n, s in wrapped.items() if hasattr(s.attack, "scaled")} == {"c", "d"}
    doubled = wrapped["d"].attack.scaled(steps=2)
    assert isinstance(doubled, RescalableVariants)
    assert [a.steps for a in doubled.attack.attacks] == [20, 20]
    assert wrapped["d"].attack.threat_model == aa.threat_model
    # wrapping twice wraps once; renamed rows are wrapped the same way
    again = with_gradient_variants(list(wrapped.values()))
    assert all(not isinstance(s.attack.attack, GradientVariants) for s in again
               if isinstance(s.attack, GradientVariants))
    renamed = with_gradient_variants([AttackSpec("pgd", FGSM(0.3), {}, ("whitebox",))])
    assert isinstance(renamed[0].attack, GradientVariants)


def test_fgsm_row_is_the_worst_over_variants_on_a_constructed_squeeze(tmp_path):
    """One signed step through the median's exact gradient lifts only each window's median
    pixel, which never moves a median: straight-through FGSM leaves the patch off; through the
    window mean every pixel rises by eps and the squeezed patch turns on."""
    from advdefense.attacks.fgsm import FGSM

    x, y = patch_images()
    model = squeezed()
    assert not FGSM(0.3).run(model, x, y).success.any()
    models = [EvalModel("toy-squeeze", model, "d1")]
    specs = [AttackSpec("renamed_l_inf_row", FGSM(0.3), {"eps": 0.3}, ("whitebox",))]
    out = run_eval(models, specs, x, y, ["whitebox"], None, CellCache(tmp_path / "c"),
                   tmp_path / "out", progress=False)
    row = next(r for r in out["rows"] if r["attack"] == "renamed_l_inf_row")
    assert row["accuracy"] == 0.0 and row["strongest_variant"] == "own/median_mean+sigmoid_t0.3"
    assert SQUEEZE_CHECK in row["flags"]
