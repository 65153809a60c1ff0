"""Every attack declares its threat model: the perturbation set and the access."""

from __future__ import annotations

import pytest

from advdefense.attacks import (
    ATTACKS,
    FGSM,
    JSMA,
    PGD,
    LocalSearch,
    SparsePGD,
    SparseRS,
    SpatialGrid,
)
from advdefense.attacks.threat import (
    L0,
    PIXELS,
    Gradient,
    Linf,
    Queries,
    Spatial,
    ThreatModel,
    threat_model_of,
)


@pytest.mark.parametrize(("attack", "expected"), [
    (FGSM(eps=0.2), ThreatModel(Linf(0.2), Gradient())),
    (PGD(eps=0.3), ThreatModel(Linf(0.3), Gradient())),
    (JSMA(gamma=0.1), ThreatModel(L0(78, "increase"), Gradient())),
    (JSMA(k=20, theta=-1.0), ThreatModel(L0(20, "decrease"), Gradient())),
    (SparsePGD(k=10), ThreatModel(L0(10), Gradient())),
    (SparsePGD(k=5000), ThreatModel(L0(PIXELS), Gradient())),
    (LocalSearch(max_queries=500), ThreatModel(L0(PIXELS), Queries(500))),
    (LocalSearch(k=20, max_queries=500), ThreatModel(L0(20), Queries(500))),
    (LocalSearch(eps=0.3, max_queries=500), ThreatModel(Linf(0.3), Queries(500))),
    (SparseRS(k=20), ThreatModel(L0(20), Queries(10_000))),
])
def test_declared_threat_models(attack, expected) -> None:
    assert attack.threat_model == expected
    assert threat_model_of(attack) == expected
    assert hash(attack.threat_model) == hash(expected)  # frozen: usable as a key


def test_spatial_presets_are_named() -> None:
    tm = SpatialGrid(preset="engstrom").threat_model
    assert tm.perturbation == Spatial(30.0, 3.0, "none", "engstrom") and tm.query_only
    assert tm.access.budget >= 5 * 5 * 31
    assert SpatialGrid(preset="uae_warmup").threat_model.perturbation.preset == "uae_warmup"
    assert SpatialGrid(preset=None, max_angle=7.0).threat_model.perturbation.preset is None


def test_every_registered_attack_declares_one() -> None:
    from advdefense.attacks import APGD

    for name, cls in ATTACKS.items():  # a cascade declares its members' common set
        tm = (cls([APGD(), APGD(loss="margin")]) if name == "cascade" else cls()).threat_model
        assert isinstance(tm, ThreatModel), name
        assert tm.as_dict()["set"] in {"linf", "l0", "spatial"}
    assert threat_model_of(None) is None  # the clean row declares none


def test_l0_set_containment_and_bad_values() -> None:
    assert L0(20).contains(L0(10, "increase")) and not L0(10).contains(L0(20))
    assert not L0(78, "increase").contains(L0(20)) and L0(PIXELS).unbounded
    assert ThreatModel(L0(5), Gradient()).l0 == L0(5)
    assert ThreatModel(Linf(0.3), Gradient()).l0 is None
    assert ThreatModel(L0(5), Queries(9)).as_dict() == {
        "set": "l0", "k": 5, "direction": "both", "access": "queries", "budget": 9}
    with pytest.raises(ValueError, match="k must be"):
        L0(0)
    with pytest.raises(ValueError, match="direction"):
        L0(5, "up")
