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
choice); the clean row belongs to all of them. Each cell carries its threat model
(:class:`advdefense.evaluation.cells.Cell`), and the clean row is told by its ``method``.

Cells of budgeted attacks cover a subset (``cell.index``: positions into the evaluated images,
see :mod:`advdefense.evaluation.grid`). A worst case is then taken on the images that *every*
combined cell covers (the subsets are nested, so: the smallest one), never by counting an
unattacked image as robust; its cell carries that ``index`` and ``n``. Cells completed by a
cascade (``target``, :mod:`advdefense.evaluation.cascade_worst`) cover their whole target: see
:mod:`advdefense.evaluation.coverage`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch

from advdefense.attacks.threat import ThreatModel
from advdefense.evaluation.cells import CLEAN, Cell, aligned
from advdefense.evaluation.coverage import covered

WORST = "worst_case"
WORST_DENSE = "worst_case_dense"
WORST_STRESS = "worst_case_stress"
WORST_CASES = (WORST, WORST_DENSE, WORST_STRESS)
ALL_THREATS = "all"
HEADLINE_K = 20  # the largest L0 budget in the headline worst case, pixels


def in_headline(tm: ThreatModel | None, headline_k: int = HEADLINE_K) -> bool:
    """Whether an attack of threat model ``tm`` belongs to the headline worst case."""
    return tm is None or tm.l0 is None or tm.l0.k <= headline_k


def is_dense(tm: ThreatModel | None) -> bool:
    """Whether an attack of threat model ``tm`` belongs to the dense (no L0) worst case."""
    return tm is None or tm.l0 is None


def worst_case(cells: Sequence[Cell], threat: str | None = None, name: str = WORST) -> Cell:
    """The worst-case cell over ``cells`` (one model), on the images all of them cover.

    Args:
        cells: cells of one model (each with its labels, predictions and confidences).
        threat: threat of the new cell (default: that of the first cell).
        name: its row name and method (``worst_case``, ``worst_case_dense``...).
    """
    if not cells:
        raise ValueError("worst_case needs at least one attack cell")
    if any(c.target is not None for c in cells):
        # a cell that did not run on an image (``ran`` False: the cascade skipped it, already
        # broken) neither fools it nor counts as correct
        index, labels, preds, conf, ran = covered(cells)
    else:
        cells = aligned(cells)
        index, labels = cells[0].index, torch.tensor(cells[0].labels, dtype=torch.long)
        preds = torch.tensor([c.pred for c in cells], dtype=torch.long).reshape(len(cells), -1)
        conf = torch.tensor([c.conf for c in cells], dtype=torch.double).reshape(len(cells), -1)
        ran = torch.ones_like(preds, dtype=torch.bool)
    correct = preds == labels[None, :]
    robust = (correct | ~ran).all(0)
    wrong_conf = conf.masked_fill(correct | ~ran, float("-inf")).amax(0)
    right_conf = conf.masked_fill(~correct, float("inf")).amin(0)
    chosen = torch.where(robust, right_conf, wrong_conf)
    pred = torch.where(robust, labels, 1 - labels)
    first = cells[0]
    return Cell(first.model, name, threat or first.threat, labels.tolist(), pred.tolist(),
                chosen.tolist(), index=index, method=name,
                seconds=round(sum(c.seconds for c in cells), 3),
                info={"over": [f"{c.threat}/{c.attack}" for c in cells]})


def add_worst_cases(cells: Sequence[Cell], all_threats: bool = True,
                    headline_k: int = HEADLINE_K) -> list[Cell]:
    """``cells`` plus the worst-case cells per (model, threat), and per model over all.

    Args:
        cells: grid cells; each one's declared ``threat_model`` (None: undeclared, counted
            everywhere) decides which worst cases take it.
        all_threats: also combine every threat of a model (threat ``all``).
        headline_k: largest L0 budget (pixels) in the headline ``worst_case``.

    Returns ``worst_case`` per (model, threat) and over all threats; ``worst_case_stress`` where
    the headline left some row out; ``worst_case_dense`` (white-box) where a white-box row is L0.
    """
    out = list(cells)
    cells = [c for c in cells if c.method not in WORST_CASES]
    attacked = {c.model for c in cells if c.method != CLEAN}
    headline = [c for c in cells if in_headline(c.threat_model, headline_k)]
    stress = {id(c) for c in cells} - {id(c) for c in headline}
    dense = [c for c in cells if c.threat == "whitebox" and is_dense(c.threat_model)]
    with_l0 = {c.model for c in cells if c.threat == "whitebox" and not is_dense(c.threat_model)}

    def has_attack(group: list[Cell]) -> bool:
        """An attack row is left (a model with no attack rows at all keeps its clean one)."""
        return any(c.method != CLEAN for c in group) or group[0].model not in attacked

    out += _variant(headline, all_threats, WORST, has_attack)
    out += _variant(cells, all_threats, WORST_STRESS,
                    lambda group: any(id(c) in stress for c in group))
    out += _variant(dense, False, WORST_DENSE,
                    lambda group: group[0].model in with_l0 and has_attack(group))
    return out


def _variant(cells: list[Cell], all_threats: bool, name: str,
             keep: Callable[[list[Cell]], bool]) -> list[Cell]:
    """Worst-case cells named ``name`` over ``cells``: per (model, threat), and per model
    over all threats when ``all_threats`` and a model has several; only groups where
    ``keep(group)`` holds."""
    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    by_model: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        groups[(c.model, c.threat)].append(c)
        if c.method != CLEAN or not any(x.method == CLEAN for x in by_model[c.model]):
            by_model[c.model].append(c)

    out = [worst_case(g, name=name) for g in groups.values() if keep(g)]
    if all_threats and len({t for _, t in groups}) > 1:
        out += [worst_case(g, ALL_THREATS, name) for g in by_model.values() if keep(g)]
    return out
