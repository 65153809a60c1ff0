"""Per-example worst case over attacks."""

import torch

from advdefense.evaluation.worst_case import ALL_THREATS, WORST, add_worst_cases, worst_case


def rec(attack, threat, pred, conf, model="m"):
    return {"model": model, "attack": attack, "threat": threat, "pred": pred, "conf": conf}


def test_robust_only_if_every_attack_failed():
    labels = torch.tensor([0, 1, 1, 0])
    records = [rec("none", "whitebox", [0, 1, 1, 1], [5, 5, 5, 5]),   # clean mistake on #3
               rec("fgsm", "whitebox", [1, 1, 1, 0], [2, 4, 3, 1]),   # breaks #0
               rec("pgd", "whitebox", [0, 1, 0, 0], [1, 6, 7, 2])]    # breaks #2
    wc = worst_case(records, labels)
    assert wc["attack"] == WORST and wc["threat"] == "whitebox"
    assert wc["pred"] == [1, 1, 0, 1]  # only #1 robust
    # broken: most confident wrong; robust: least confident right
    assert wc["conf"] == [2.0, 4.0, 7.0, 5.0]


def test_add_worst_cases_per_threat_and_all():
    labels = torch.tensor([0, 1])
    records = [rec("none", "transfer", [0, 1], [1, 1]), rec("fgsm", "transfer", [0, 1], [1, 1]),
               rec("none", "whitebox", [0, 1], [1, 1]), rec("pgd", "whitebox", [0, 0], [1, 1])]
    out = add_worst_cases(records, labels)
    wcs = {(r["threat"]): r["pred"] for r in out if r["attack"] == WORST}
    assert wcs == {"transfer": [0, 1], "whitebox": [0, 0], ALL_THREATS: [0, 0]}


def test_restrict_keeps_every_per_image_list_aligned():
    from advdefense.evaluation.worst_case import restrict

    r = {"pred": [0, 1, 1], "conf": [0.1, 0.2, 0.3], "l0": [4, 5, 6], "index": [2, 5, 9], "n": 3}
    out = restrict(r, [5, 9])
    assert (out["pred"], out["conf"], out["l0"], out["n"]) == ([1, 1], [0.2, 0.3], [5, 6], 2)


def test_dense_worst_case_leaves_out_only_the_sparse_attacks():
    from advdefense.evaluation.worst_case import WORST_DENSE

    labels = torch.tensor([0, 1, 0])
    records = [rec("none", "whitebox", [0, 1, 0], [1, 1, 1]),
               rec("pgd", "whitebox", [0, 1, 1], [1, 1, 1]),        # breaks image 2
               rec("jsma", "whitebox", [1, 1, 0], [1, 1, 1]),       # breaks image 0
               rec("local_search", "blackbox", [0, 0, 0], [1, 1, 1])]  # breaks image 1
    out = add_worst_cases(records, labels, sparse=["jsma", "local_search"])
    by = {(r["attack"], r["threat"]): r["pred"] for r in out}
    assert by[(WORST, ALL_THREATS)] == [1, 0, 1]      # every image broken by something
    assert by[(WORST, "whitebox")] == [1, 1, 1]
    assert by[(WORST_DENSE, "whitebox")] == [0, 1, 1]  # only PGD's break counts
    assert [k for k in by if k[0] == WORST_DENSE] == [(WORST_DENSE, "whitebox")]
    assert not [r for r in add_worst_cases(records, labels) if r["attack"] == WORST_DENSE]
    # a grid without sparse attacks gets no dense row: it would equal worst_case
    dense_only = add_worst_cases(records[:2], labels, sparse=["jsma"])
    assert not [r for r in dense_only if r["attack"] == WORST_DENSE]
