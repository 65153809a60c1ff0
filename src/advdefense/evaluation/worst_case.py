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

Which attacks a worst case combines depends on each attack's declared threat model
(:mod:`advdefense.attacks.threat`), never on its row name:

* ``worst_case`` (the headline): L-infinity, spatial and L0 attacks with ``k <= headline_k``
  (20 pixels). An L0 attack with a larger budget (JSMA's 78 pixels, the local search without a
  pixel limit) can redraw part of a digit (people relabel MNIST L0 examples at a median of 25
  changed pixels, Tramer et al. 2020), so it is a stress test, not part of the headline.
* ``worst_case_stress``: every attack, the stress rows included (per threat and over all); only
  where some row was left out of the headline, else it would equal it.
* ``worst_case_dense`` (threat ``whitebox``) leaves out every L0 attack: the white-box worst case
  over the L-inf and spatial attacks only. It is white-box only because the black-box rows run on
  far fewer images (the query-only searches are slow), which would shrink its n to theirs.

An attack that declares no threat model is counted in every worst case (the conservative
choice); the clean row belongs to all of them.

Records of budgeted attacks cover a subset (``record["index"]``: positions into the evaluated
images, see :mod:`advdefense.evaluation.grid`). A worst case is then taken on the images that
*every* combined record covers (the subsets are nested, so: the smallest one), never by
counting an unattacked image as robust; its record carries that ``index`` and ``n``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch

from advdefense.attacks.threat import ThreatModel

WORST = "worst_case"
WORST_DENSE = "worst_case_dense"
WORST_STRESS = "worst_case_stress"
WORST_CASES = (WORST, WORST_DENSE, WORST_STRESS)
ALL_THREATS = "all"
CLEAN = "none"
HEADLINE_K = 20  # the largest L0 budget in the headline worst case, pixels


def in_headline(tm: ThreatModel | None, headline_k: int = HEADLINE_K) -> bool:
    """Whether an attack of threat model ``tm`` belongs to the headline worst case."""
    return tm is None or tm.l0 is None or tm.l0.k <= headline_k


def is_dense(tm: ThreatModel | None) -> bool:
    """Whether an attack of threat model ``tm`` belongs to the dense (no L0) worst case."""
    return tm is None or tm.l0 is None


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
                    all_threats: bool = True,
                    threat_models: Mapping[str, ThreatModel | None] | None = None,
                    headline_k: int = HEADLINE_K) -> list[dict[str, Any]]:
    """``records`` plus the worst-case records per (model, threat), and per model over all.

    Args:
        records: cell records (``model``, ``attack``, ``threat``, ``pred``, ``conf``).
        labels: (N,) int64 in {0, 1}.
        all_threats: also combine every threat of a model (threat ``all``).
        threat_models: attack row name -> the attack's declared threat model (rows absent or
            None: undeclared, counted everywhere). Decides which worst cases take each row.
        headline_k: largest L0 budget (pixels) in the headline ``worst_case``.

    Returns ``worst_case`` per (model, threat) and over all threats; ``worst_case_stress`` where
    the headline left some row out; ``worst_case_dense`` (white-box) where a white-box row is L0.
    """
    tms = dict(threat_models or {})
    out = list(records)
    records = [r for r in records if r["attack"] not in WORST_CASES]
    attacked = {r["model"] for r in records if r["attack"] != CLEAN}
    headline = [r for r in records if in_headline(tms.get(r["attack"]), headline_k)]
    stress = {id(r) for r in records} - {id(r) for r in headline}
    dense = [r for r in records if r["threat"] == "whitebox" and is_dense(tms.get(r["attack"]))]
    with_l0 = {r["model"] for r in records
               if r["threat"] == "whitebox" and not is_dense(tms.get(r["attack"]))}

    def has_attack(group: list[dict[str, Any]]) -> bool:
        """An attack row is left (a model with no attack rows at all keeps its clean one)."""
        return any(r["attack"] != CLEAN for r in group) or group[0]["model"] not in attacked

    out += _variant(headline, labels, all_threats, WORST, has_attack)
    out += _variant(records, labels, all_threats, WORST_STRESS,
                    lambda group: any(id(r) in stress for r in group))
    out += _variant(dense, labels, False, WORST_DENSE,
                    lambda group: group[0]["model"] in with_l0 and has_attack(group))
    return out


def _variant(records: list[dict[str, Any]], labels: torch.Tensor, all_threats: bool,
             name: str, keep: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """Worst-case records named ``name`` over ``records``: per (model, threat), and per model
    over all threats when ``all_threats`` and a model has several; only groups where
    ``keep(group)`` holds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["attack"] in WORST_CASES:
            continue
        groups[(r["model"], r["threat"])].append(r)
        if r["attack"] != CLEAN or not any(x["attack"] == CLEAN for x in by_model[r["model"]]):
            by_model[r["model"]].append(r)

    out = [worst_case(g, labels) | {"attack": name} for g in groups.values() if keep(g)]
    if all_threats and len({t for _, t in groups}) > 1:
        out += [worst_case(g, labels, ALL_THREATS) | {"attack": name}
                for g in by_model.values() if keep(g)]
    return out
