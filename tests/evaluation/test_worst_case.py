"""Per-example worst case over attacks."""

from dataclasses import replace

import torch

from advdefense.attacks.threat import L0, Gradient, Linf, Queries, ThreatModel
from advdefense.evaluation.cells import Cell
from advdefense.evaluation.worst_case import (
    ALL_THREATS,
    WORST,
    WORST_DENSE,
    WORST_STRESS,
    add_worst_cases,
    worst_case,
)

TMS = {"pgd": ThreatModel(Linf(0.3), Gradient()),
       "fgsm": ThreatModel(Linf(0.3), Gradient()),
       "jsma": ThreatModel(L0(20, "increase"), Gradient()),
       "jsma78": ThreatModel(L0(78, "increase"), Gradient()),
       "local_search": ThreatModel(L0(784), Queries(5000)),
       "sparse_rs": ThreatModel(L0(10), Queries(10_000))}


def rec(attack, threat, pred, conf, labels, model="m", tms=TMS, index=None):
    """A cell; ``labels``: the evaluated images' labels (cut to ``index`` when given)."""
    y = labels.tolist() if index is None else [int(labels[i]) for i in index]
    return Cell(model, attack, threat, y, list(pred), [float(c) for c in conf], index=index,
                method="none" if attack == "none" else attack, threat_model=tms.get(attack))


def test_robust_only_if_every_attack_failed():
    labels = torch.tensor([0, 1, 1, 0])
    records = [rec("none", "whitebox", [0, 1, 1, 1], [5, 5, 5, 5], labels),   # clean mistake on #3
               rec("fgsm", "whitebox", [1, 1, 1, 0], [2, 4, 3, 1], labels),   # breaks #0
               rec("pgd", "whitebox", [0, 1, 0, 0], [1, 6, 7, 2], labels)]    # breaks #2
    wc = worst_case(records)
    assert wc.attack == WORST and wc.threat == "whitebox" and wc.method == WORST
    assert wc.pred == [1, 1, 0, 1]  # only #1 robust
    # broken: most confident wrong; robust: least confident right
    assert wc.conf == [2.0, 4.0, 7.0, 5.0]


def test_add_worst_cases_per_threat_and_all():
    labels = torch.tensor([0, 1])
    records = [rec("none", "transfer", [0, 1], [1, 1], labels),
               rec("fgsm", "transfer", [0, 1], [1, 1], labels),
               rec("none", "whitebox", [0, 1], [1, 1], labels),
               rec("pgd", "whitebox", [0, 0], [1, 1], labels)]
    out = add_worst_cases(records)
    wcs = {c.threat: c.pred for c in out if c.attack == WORST}
    assert wcs == {"transfer": [0, 1], "whitebox": [0, 0], ALL_THREATS: [0, 0]}


def test_restrict_keeps_every_per_image_list_aligned():
    c = Cell("m", "a", "whitebox", [0, 1, 1], [0, 1, 1], [0.1, 0.2, 0.3], index=[2, 5, 9],
             l0=[4, 5, 6])
    out = c.restrict([5, 9])
    assert (out.pred, out.conf, out.l0, out.n, out.labels, out.index) == (
        [1, 1], [0.2, 0.3], [5, 6], 2, [1, 1], [5, 9])


def test_worst_case_never_counts_an_image_some_attack_skipped():
    """Budgeted subsets: the worst case covers only the images every attack ran on, whatever
    the order of the cells, and a cell that skipped an image never makes it robust."""
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    clean = rec("none", "whitebox", [0, 1, 0, 1, 0, 1], [1] * 6, labels)
    big = rec("pgd", "whitebox", [0, 1, 1, 1], [1] * 4, labels, index=[0, 1, 2, 3])
    small = rec("jsma", "whitebox", [1, 1], [1] * 2, labels, index=[0, 1])
    for order in ([clean, big, small], [small, clean, big], [big, small, clean]):
        wc = worst_case(order)
        assert wc.index == [0, 1] and wc.n == 2 and wc.pred == [1, 1]
    # images 2-5 were skipped by jsma: no worst case that takes jsma covers them (the dense
    # one leaves the L0 row out, so it covers pgd's images)
    for c in add_worst_cases([clean, big, small]):
        if c.attack.startswith(WORST):
            want = {0, 1, 2, 3} if c.attack == WORST_DENSE else {0, 1}
            assert set(c.positions) == want, (c.attack, c.threat, c.positions)


def typed(cells, tms):
    """The cells with the threat models ``tms`` gives their rows (absent: undeclared)."""
    return [replace(c, threat_model=tms.get(c.attack)) for c in cells]


def by_row(cells, **kw):
    return {(c.attack, c.threat): c for c in add_worst_cases(cells, **kw)}


def test_dense_worst_case_leaves_out_only_the_l0_attacks():
    labels = torch.tensor([0, 1, 0])
    records = [rec("none", "whitebox", [0, 1, 0], [1, 1, 1], labels),
               rec("pgd", "whitebox", [0, 1, 1], [1, 1, 1], labels),        # breaks image 2
               rec("jsma", "whitebox", [1, 1, 0], [1, 1, 1], labels),       # breaks image 0
               rec("sparse_rs", "blackbox", [0, 0, 0], [1, 1, 1], labels)]  # breaks image 1
    by = {k: c.pred for k, c in by_row(records).items()}
    assert by[(WORST, ALL_THREATS)] == [1, 0, 1]      # every image broken by something
    assert by[(WORST, "whitebox")] == [1, 1, 1]
    assert by[(WORST_DENSE, "whitebox")] == [0, 1, 1]  # only PGD's break counts
    assert [k for k in by if k[0] == WORST_DENSE] == [(WORST_DENSE, "whitebox")]
    assert not [k for k in by if k[0] == WORST_STRESS]  # nothing above 20 pixels
    # undeclared threat models count everywhere: no dense row, it would equal worst_case
    assert not [k for k in by_row(typed(records, {})) if k[0] == WORST_DENSE]
    assert not [k for k in by_row(records[:2]) if k[0] == WORST_DENSE]


def test_headline_leaves_out_the_stress_rows_which_get_their_own_worst_case():
    labels = torch.tensor([0, 1, 0, 1])
    records = [rec("none", "whitebox", [0, 1, 0, 1], [1] * 4, labels),
               rec("pgd", "whitebox", [1, 1, 0, 1], [1] * 4, labels),       # breaks image 0
               rec("jsma", "whitebox", [0, 0, 0, 1], [1] * 4, labels),      # k = 20: image 1
               rec("jsma78", "whitebox", [0, 1, 1, 1], [1] * 4, labels),    # k = 78: image 2
               rec("none", "blackbox", [0, 1, 0, 1], [1] * 4, labels),
               rec("local_search", "blackbox", [0, 1, 0, 0], [1] * 4, labels)]  # unbounded: 3
    by = by_row(records)
    assert by[(WORST, "whitebox")].pred == [1, 0, 0, 1]
    assert by[(WORST, ALL_THREATS)].pred == [1, 0, 0, 1]
    assert (WORST, "blackbox") not in by  # only a stress row there: no headline figure
    assert by[(WORST_STRESS, "whitebox")].pred == [1, 0, 1, 1]
    assert by[(WORST_STRESS, "blackbox")].pred == [0, 1, 0, 0]
    assert by[(WORST_STRESS, ALL_THREATS)].pred == [1, 0, 1, 0]
    assert "whitebox/jsma78" in by[(WORST_STRESS, "whitebox")].info["over"]
    assert "whitebox/jsma78" not in by[(WORST, "whitebox")].info["over"]
    assert by[(WORST_DENSE, "whitebox")].pred == [1, 1, 0, 1]
    # a larger headline budget takes the 78-pixel row in
    assert by_row(records, headline_k=78)[(WORST, "whitebox")].pred == [1, 0, 1, 1]


def test_renaming_rows_changes_no_worst_case():
    """Worst cases follow the declared threat models, never the row names."""
    labels = torch.tensor([0, 1, 0, 1, 1])
    g = torch.Generator().manual_seed(0)
    records = [rec("none", t, [0, 1, 0, 1, 1], [1.0] * 5, labels) for t in ("whitebox", "blackbox")]
    for name, threat in (("pgd", "whitebox"), ("jsma", "whitebox"), ("jsma78", "whitebox"),
                         ("local_search", "blackbox"), ("sparse_rs", "blackbox")):
        pred = torch.where(torch.rand(5, generator=g) < 0.3, 1 - labels, labels).tolist()
        records.append(rec(name, threat, pred, torch.rand(5, generator=g).tolist(), labels))
    rename = {n: f"row{i}" for i, n in enumerate(TMS)} | {"none": "none"}
    renamed = [replace(c, attack=rename[c.attack]) for c in records]

    def summary(cells):
        return {k: (c.pred, c.conf, c.n) for k, c in by_row(cells).items()
                if k[0].startswith(WORST)}

    a = summary(records)
    assert a == summary(renamed) and {k[0] for k in a} == {WORST, WORST_STRESS, WORST_DENSE}
    # dispatching on names would have changed it: the same rows, threat models swapped
    swapped = [replace(c, threat_model=TMS["jsma78"]) if c.attack == rename["jsma"] else
               replace(c, threat_model=TMS["jsma"]) if c.attack == rename["jsma78"] else c
               for c in renamed]
    assert summary(swapped) != a


def test_renaming_every_row_changes_no_worst_case_and_no_check(tmp_path):
    """End to end: the same attacks under other row names give the same worst-case figures
    and the same sanity-check verdicts (the checks name the renamed rows)."""
    from eval_helpers import data, linear_model, run_eval

    from advdefense.attacks import PGD, SparsePGD, SparseRS
    from advdefense.evaluation.cache import CellCache
    from advdefense.evaluation.threats import AttackSpec, EvalModel

    x, y = data(16)
    model = EvalModel("lin", linear_model(1), "dl")

    def specs(names):
        a, b, c, d = names
        return [AttackSpec(a, PGD(eps=0.1, steps=3), {"eps": 0.1}, ("whitebox",)),
                AttackSpec(b, SparsePGD(k=5, steps=3, restarts=1), {"k": 5}, ("whitebox",)),
                AttackSpec(c, SparsePGD(k=60, steps=3, restarts=1), {"k": 60}, ("whitebox",)),
                AttackSpec(d, SparseRS(k=5, max_queries=40), {"k": 5}, ("blackbox",))]

    def run(names, folder):
        out = run_eval([model], specs(names), x, y, ["whitebox", "blackbox"], None,
                              CellCache(tmp_path / folder / "c"), tmp_path / folder, None,
                              progress=False)
        worst = {(r["attack"], r["threat"]): (r["accuracy"], r["n"]) for r in out["rows"]
                 if r["attack"].startswith(WORST)}
        back = dict(zip(names, ("pgd", "sparse_pgd", "sparse_pgd_78", "sparse_rs"), strict=True))
        checks = sorted((c["check"], c["threat"], back.get(c["attack"], c["attack"]), c["passed"])
                        for c in out["checks"])
        return worst, checks

    a = run(("pgd", "sparse_pgd", "sparse_pgd_78", "sparse_rs"), "a")
    b = run(("r1", "r2", "r3", "r4"), "b")
    assert a == b
    assert {k[0] for k in a[0]} == {WORST, WORST_STRESS, WORST_DENSE}
    assert any(c[0] == "l0_blackbox_beats_whitebox" for c in a[1])
