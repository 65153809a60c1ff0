"""Per-example worst case over attacks (an example is robust only if every attack failed).

For a model and a threat model, with A attacks (the clean row included, so a clean mistake
is never counted as robust):

* ``robust[i] = all_a(pred[a, i] == label[i])``;
* the worst-case prediction is the label where robust, the other class elsewhere (two
  classes), so precision/recall/F1 follow from it;
* the worst-case confidence (for accuracy at 80% coverage) is chosen the way an adversary
  facing an abstaining model would: where some attack succeeded, the *most* confident wrong
  prediction; where none did, the *least* confident correct one.

The threat ``all`` combines every threat model's attacks: the most honest single number.
``worst_case_dense`` (threat ``whitebox``) leaves out the sparse (L0) attacks, whose pixel budget
lets them redraw part of a digit: the white-box worst case over the L-inf and spatial attacks
only, a separate row beside ``worst_case``, never instead of it. It is white-box only because the
black-box rows run on far fewer images (the query-only searches are slow), which would shrink
its n to theirs; the sanity checks compare those searches with the white-box rows instead.

Records of budgeted attacks cover a subset (``record["index"]``: positions into the evaluated
images, see :mod:`advdefense.evaluation.grid`). A worst case is then taken on the images that
*every* combined record covers (the subsets are nested, so: the smallest one), never by
counting an unattacked image as robust; its record carries that ``index`` and ``n``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch

WORST = "worst_case"
WORST_DENSE = "worst_case_dense"
ALL_THREATS = "all"


def worst_case(records: list[dict[str, Any]], labels: torch.Tensor,
               threat: str | None = None) -> dict[str, Any]:
    """The ``worst_case`` record over ``records`` (same model, each with ``pred``/``conf``).

    Args:
        records: cell records of one model, N predictions each.
        labels: (N,) int64 in {0, 1}.
        threat: threat of the new record (default: that of the first record).
    """
    if not records:
        raise ValueError("worst_case needs at least one attack record")
    labels = labels.cpu()  # records hold plain lists; the images may live on a GPU
    index = common_index(records, len(labels))
    if index is not None:
        records = [restrict(r, index) for r in records]
        labels = labels[torch.tensor(index, dtype=torch.long)]
    preds = torch.tensor([r["pred"] for r in records], dtype=torch.long)  # (A, N)
    conf = torch.tensor([r["conf"] for r in records], dtype=torch.double)  # (A, N)
    correct = preds == labels[None, :]
    robust = correct.all(0)
    wrong_conf = conf.masked_fill(correct, float("-inf")).amax(0)
    right_conf = conf.masked_fill(~correct, float("inf")).amin(0)
    chosen = torch.where(robust, right_conf, wrong_conf)
    pred = torch.where(robust, labels, 1 - labels)
    first = records[0]
    extra = {} if index is None else {"index": index}
    return extra | {
        "model": first["model"], "attack": WORST, "threat": threat or first["threat"],
        "n": len(labels), "key": "", "pred": pred.tolist(), "conf": chosen.tolist(),
        "seconds": round(sum(r.get("seconds", 0.0) for r in records), 3),
        "info": {"over": [f"{r['threat']}/{r['attack']}" for r in records]},
        "examples": {"index": [], "adv": []},
    }


def common_index(records: list[dict[str, Any]], n: int) -> list[int] | None:
    """Sorted positions covered by every record (None: all ``n``, no record is a subset)."""
    subsets = [set(r["index"]) for r in records if r.get("index") is not None]
    if not subsets:
        return None
    return sorted(set.intersection(*subsets) & set(range(n)))


def restrict(record: dict[str, Any], index: list[int]) -> dict[str, Any]:
    """``record`` with its per-image lists (``pred``, ``conf``, ``l0``) kept at ``index`` only."""
    have = record.get("index")
    where = {p: i for i, p in enumerate(have)} if have is not None else None
    pos = [where[p] for p in index] if where is not None else index
    lists = {k: [record[k][i] for i in pos] for k in ("pred", "conf", "l0") if k in record}
    return record | lists | {"index": index, "n": len(index)}


def add_worst_cases(records: list[dict[str, Any]], labels: torch.Tensor,
                    all_threats: bool = True, sparse: Iterable[str] = ()) -> list[dict[str, Any]]:
    """``records`` plus one worst-case record per (model, threat), and per model over all.

    ``sparse``: names of the sparse (L0) attack rows; when any of a model's white-box records
    is one, that model also gets a ``worst_case_dense`` record (threat ``whitebox``) over the
    other white-box records.
    """
    sparse = set(sparse)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["attack"] in (WORST, WORST_DENSE):
            continue
        groups[(r["model"], r["threat"])].append(r)
        if r["attack"] != "none" or not by_model[r["model"]]:
            by_model[r["model"]].append(r)
    out = list(records)
    out += [worst_case(group, labels) for group in groups.values()]
    if all_threats and len({t for _, t in groups}) > 1:
        out += [worst_case(group, labels, ALL_THREATS) for group in by_model.values()]
    for (_, threat), group in groups.items():
        dense = [r for r in group if r["attack"] not in sparse]
        if threat == "whitebox" and dense and len(dense) < len(group):
            out.append(worst_case(dense, labels) | {"attack": WORST_DENSE})
    return out
