"""Sanity checks against gradient masking (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"; Athalye et al. 2018). Each check yields results
``{check, model, threat, attack, passed, detail}`` and, when it fails, a flag name added to
the ``flags`` of the affected result rows.

Checks (``tol`` is an absolute accuracy tolerance, for restarts' randomness):

* ``eps0_not_clean``: eps = 0 must give exactly the clean accuracy (eps sweep).
* ``acc_rises_with_eps``: accuracy must not rise with eps by more than ``tol`` (eps sweep).
* ``fgsm_beats_pgd``: white-box PGD at least as strong as white-box FGSM at the same eps (grid
  and sweep; the rows are found by their attacks' ``method``, ``pgd`` and ``fgsm``, and
  L-infinity threat models, never by row name). Not checked for transfer: PGD examples overfit the surrogate and often transfer
  worse than FGSM's (measured here: e.g. 0.996 vs 0.822 on ``none-fgsm``), which says nothing
  about the evaluated model's gradients.
* ``transfer_beats_whitebox``: white-box at least as strong as transfer, per attack and
  for the worst case (grid).
* ``blackbox_beats_whitebox``: the black-box worst case not stronger than the white-box one.
* ``linf_blackbox_beats_pgd``: a query-only attack inside an L-inf ball (by its declared threat
  model: the L-inf local search) not stronger than white-box PGD of at least that eps; where it is, PGD's gradient (e.g. a
  straight-through approximation of rounding) is misleading and the PGD rows are flagged.
* ``l0_blackbox_beats_whitebox``: a black-box L0 attack (by its declared threat model: the
  local search, Sparse-RS), counting only its successes that changed at most ``k`` pixels, not
  stronger than a white-box L0 attack of budget ``k`` whose perturbation set contains those
  (same direction or both; JSMA only adds ink, so an attack that erases ink is not compared with
  it). Where it is, the gradient L0 attack is misled (e.g. a model adversarially trained
  against it) and its row is flagged.
* ``eps1_not_broken``: at eps = 1 every model falls to at most ``eps1_max_acc`` under the
  white-box iterative eps-sweep attacks (PGD; any image is then reachable, so nothing can be
  robust). One FGSM step is exempt: at eps = 1 it maps every pixel to 0 or 1 along the
  gradient sign, which need not cross the boundary.
* ``attack_not_converged``: doubling a rescalable attack's iterations, or its restarts (APGD,
  the ``autoattack`` cascade; :mod:`advdefense.evaluation.convergence`), must lower its
  white-box accuracy by less than ``tol``; where it does not, the attack had not converged and
  its row (an upper bound) is flagged.
* ``zero_gradient``: the input gradient of the attacked model is nonzero on (almost) every
  example, through every preprocessing (checked on exactly what the white-box attacks see).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advdefense.attacks.threat import Linf
from advdefense.evaluation.cells import CLEAN, Cell, aligned
from advdefense.evaluation.worst_case import WORST

Check = dict[str, Any]


def _check(name: str, model: str, threat: str, attack: str, passed: bool, detail: str,
           also: str | None = None) -> Check:
    """A check result; ``also``: a second row it concerns (flagged with ``attack``)."""
    out = {"check": name, "model": model, "threat": threat, "attack": attack,
           "passed": bool(passed), "detail": detail}
    return out | ({"also": also} if also is not None else {})


def gradient_fraction(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of examples whose cross-entropy input gradient is exactly zero.

    Shape: images (N, 1, 28, 28) in [0, 1], labels (N,) -> a float in [0, 1].
    """
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        return 1.0
    return float((grad.flatten(1).abs().amax(1) == 0).double().mean())


def gradient_checks(models: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor,
                    max_zero: float = 0.05) -> list[Check]:
    """``zero_gradient`` for each attacked model (``name -> attackable module``)."""
    out = []
    for name, module in models.items():
        frac = gradient_fraction(module, images, labels)
        out.append(_check("zero_gradient", name, "whitebox", "*", frac <= max_zero,
                          f"{frac:.1%} of {len(labels)} examples have an all-zero input gradient"))
    return out


def sweep_checks(rows: Sequence[dict[str, Any]], tol: float = 0.01,
                 eps1_max_acc: float = 0.05) -> list[Check]:
    """eps = 0, monotonicity, PGD vs FGSM and eps = 1 on eps-sweep rows (see sweeps.py).

    Rows are told apart by their ``method`` (the attack's family; rows without one fall back
    to their ``attack`` name), so the sweep's row names do not matter.
    """
    clean = {r["model"]: r["accuracy"] for r in rows if r["eps"] is None}
    curves: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    methods: dict[str, str] = {}
    for r in rows:
        if r["eps"] is not None:
            curves[(r["model"], r["attack"], r["threat"])].append((r["eps"], r["accuracy"]))
            methods[r["attack"]] = r.get("method", r["attack"])
    out = []
    for (model, attack, threat), pts in curves.items():
        pts.sort()
        acc = dict(pts)
        if 0.0 in acc and model in clean:
            ok = abs(acc[0.0] - clean[model]) < 1e-9
            out.append(_check("eps0_not_clean", model, threat, attack, ok,
                              f"eps=0 acc {acc[0.0]:.4f} vs clean {clean[model]:.4f}"))
        rises = [(a, b) for (e0, a), (e1, b) in zip(pts, pts[1:], strict=False) if b > a + tol]
        out.append(_check("acc_rises_with_eps", model, threat, attack, not rises,
                          f"accuracy vs eps {[(e, round(a, 3)) for e, a in pts]}"))
        if threat == "whitebox" and methods[attack] != "fgsm" and 1.0 in acc:
            out.append(_check("eps1_not_broken", model, threat, attack, acc[1.0] <= eps1_max_acc,
                              f"acc {acc[1.0]:.4f} at eps=1 (max allowed {eps1_max_acc})"))
        if methods[attack] != "fgsm" or threat != "whitebox":
            continue
        for (m, other, t), ppts in curves.items():
            if m != model or t != threat or methods[other] != "pgd":
                continue
            pgd = dict(ppts)
            bad = [e for e in acc if e in pgd and pgd[e] > acc[e] + tol]
            out.append(_check("fgsm_beats_pgd", model, threat, other, not bad,
                              f"PGD weaker than FGSM at eps {bad}" if bad else
                              "PGD <= FGSM at every eps", also=attack))
    return out


def _pair(a: Cell, b: Cell) -> tuple[float, float, str]:
    """Accuracies of cells ``a`` and ``b`` on the images both were computed on.

    Budgeted cells (``eval.attack_n``) cover nested subsets of different sizes; comparing
    their whole-row accuracies would compare different images.
    """
    sa, sb = aligned([a, b])
    if sa.n == 0:
        return a.accuracy, b.accuracy, " (no shared images: whole rows)"
    return sa.accuracy, sb.accuracy, f" on {sa.n} shared images"


def _capped_blackbox(ls: Cell, wb: Cell, k: int) -> tuple[float, float, str] | None:
    """Accuracy under the black-box cell ``ls`` counting only successes with <= k changed
    pixels, and under the white-box cell ``wb``, on their shared images (None: no L0 data)."""
    if ls.l0 is None:
        return None
    ls, wb = aligned([ls, wb])
    if ls.n == 0:
        return None
    fooled = ~ls.correct & (torch.tensor(ls.l0, dtype=torch.long) <= k)
    return float((~fooled).double().mean()), wb.accuracy, f" on {ls.n} shared images"


def _l0_checks(bb: Cell, cells: Sequence[Cell], tol: float) -> list[Check]:
    """``l0_blackbox_beats_whitebox`` for the black-box cell ``bb`` against every white-box
    L0 cell of the same model whose perturbation set contains ``bb``'s (capped at its k)."""
    tm = bb.threat_model
    if tm is None or tm.l0 is None:
        return []
    out = []
    for w in cells:
        wtm = w.threat_model
        if (w.model != bb.model or w.threat != "whitebox" or wtm is None or wtm.l0 is None
                or wtm.l0.direction not in ("both", tm.l0.direction)):
            continue
        k = wtm.l0.k
        pair = _capped_blackbox(bb, w, k)
        if pair is not None:
            acc, other, where = pair
            out.append(_check(
                "l0_blackbox_beats_whitebox", w.model, "whitebox", w.attack, acc >= other - tol,
                f"query-only {bb.attack} within {k} pixels {acc:.4f} vs white-box {w.attack} "
                f"{other:.4f}{where}"))
    return out


def _linf(cell: Cell) -> float | None:
    """The cell's L-infinity eps, or None when its threat model is not an L-infinity ball."""
    tm = cell.threat_model
    return tm.perturbation.eps if tm is not None and isinstance(tm.perturbation, Linf) else None


def grid_checks(cells: Sequence[Cell], tol: float = 0.01) -> list[Check]:
    """PGD vs FGSM, white-box vs transfer and black-box vs white-box on the grid's cells.

    Rows are found by what they measure: PGD and FGSM by their attacks' ``method`` with
    L-infinity threat models (PGD only against an FGSM of at most its eps), the query-only
    L-inf and L0 attacks by their declared threat models. Every comparison uses only the
    images both cells ran on (see :func:`_pair`).
    """
    by = {c.name: c for c in cells}
    out = []
    for (model, attack, threat), c in by.items():
        if c.method == "pgd" and threat == "whitebox" and _linf(c) is not None:
            for f in cells:
                if (f.model == model and f.threat == threat and f.method == "fgsm"
                        and (_linf(f) or 0) <= _linf(c)):
                    acc, other, where = _pair(c, f)
                    out.append(_check("fgsm_beats_pgd", model, threat, attack, acc <= other + tol,
                                      f"PGD {acc:.4f} vs FGSM {other:.4f}{where}", also=f.attack))
        tr = by.get((model, attack, "transfer"))
        if threat == "whitebox" and c.method != CLEAN and tr:
            acc, other, where = _pair(c, tr)
            out.append(_check("transfer_beats_whitebox", model, threat, attack,
                              acc <= other + tol,
                              f"white-box {acc:.4f} vs transfer {other:.4f}{where}"))
        eps = _linf(c)
        if (threat == "blackbox" and eps is not None and c.threat_model is not None
                and c.threat_model.query_only):
            for p in cells:
                if (p.model == model and p.threat == "whitebox" and p.method == "pgd"
                        and (_linf(p) or 0) >= eps):
                    acc, other, where = _pair(c, p)
                    out.append(_check(
                        "linf_blackbox_beats_pgd", model, "whitebox", p.attack, acc >= other - tol,
                        f"query-only L-inf search {acc:.4f} vs white-box PGD {other:.4f}{where}"))
        if threat == "blackbox":
            out += _l0_checks(c, cells, tol)
        wb = by.get((model, WORST, "whitebox"))
        if threat == "blackbox" and attack == WORST and wb:
            acc, other, where = _pair(c, wb)
            out.append(_check("blackbox_beats_whitebox", model, "whitebox", WORST,
                              acc >= other - tol,
                              f"black-box worst case {acc:.4f} vs white-box {other:.4f}{where}"))
    return out


def convergence_checks(runs: Sequence[dict[str, Any]], tol: float = 0.01) -> list[Check]:
    """``attack_not_converged`` per convergence run (``model``, ``attack``, ``n``,
    ``accuracy``, ``accuracy_steps``, ``accuracy_restarts``; see ``evaluation.convergence``):
    passes when both doublings move the accuracy by less than ``tol``."""
    out = []
    for r in runs:
        move = max(r["accuracy"] - r["accuracy_steps"], r["accuracy"] - r["accuracy_restarts"])
        out.append(_check(
            "attack_not_converged", r["model"], "whitebox", r["attack"], move < tol,
            f"accuracy {r['accuracy']:.4f}, doubled iterations {r['accuracy_steps']:.4f}, "
            f"doubled restarts {r['accuracy_restarts']:.4f} on {r['n']} images (tol {tol})"))
    return out


_MODEL_WIDE = {"zero_gradient", "eps0_not_clean", "acc_rises_with_eps", "eps1_not_broken",
               "blackbox_beats_whitebox"}


def _affected(check: Check, row: dict[str, Any]) -> bool:
    if row["model"] != check["model"]:
        return False
    if row["threat"] == "all":
        return True
    if row["threat"] != check["threat"]:
        return False
    if check["check"] in _MODEL_WIDE:
        return True
    attacks = {check["attack"], WORST} | ({check["also"]} if check.get("also") else set())
    return row["attack"] in attacks


def apply_flags(rows: list[dict[str, Any]], checks: Sequence[Check]) -> None:
    """Add each failed check's name to the ``flags`` of the rows it affects (in place).

    Model-wide checks (gradients, eps sweep, black box vs white box) flag every row of the
    model under that threat; pairwise ones flag the two attacks' rows and the worst case.
    The model's ``all``-threats worst case gets every flag of the model.
    """
    for check in checks:
        if check["passed"]:
            continue
        for row in rows:
            flags = row.setdefault("flags", [])
            if _affected(check, row) and check["check"] not in flags:
                flags.append(check["check"])
