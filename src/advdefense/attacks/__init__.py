"""Attacks sharing one call convention: ``attack(model, images, labels) -> images``.

``ATTACKS`` maps a short name to the class; :func:`build_attack` builds one by name.
"""

from __future__ import annotations

from typing import Any

from advdefense.attacks.apgd import APGD
from advdefense.attacks.base import Attack, AttackResult, eval_mode, input_grad, predict
from advdefense.attacks.cascade import Cascade
from advdefense.attacks.fgsm import FGSM
from advdefense.attacks.jsma import JSMA
from advdefense.attacks.local_search import LocalSearch
from advdefense.attacks.pgd import PGD
from advdefense.attacks.sparse_pgd import SparsePGD
from advdefense.attacks.sparse_rs import SparseRS
from advdefense.attacks.spatial import SpatialGrid
from advdefense.checks import check_choice

ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "spatial": SpatialGrid,
                                   "local_search": LocalSearch, "jsma": JSMA,
                                   "sparse_pgd": SparsePGD, "sparse_rs": SparseRS, "apgd": APGD,
                                   "cascade": Cascade}


def build_attack(name: str, **kwargs: Any) -> Attack:
    """Build the attack registered as ``name`` (see ``ATTACKS``) with constructor ``kwargs``."""
    check_choice("attack.name", name, sorted(ATTACKS))
    return ATTACKS[name](**kwargs)


__all__ = ["APGD", "ATTACKS", "Attack", "AttackResult", "Cascade", "FGSM", "JSMA", "LocalSearch",
           "PGD", "SparsePGD", "SparseRS", "SpatialGrid", "build_attack", "eval_mode", "input_grad",
           "predict"]
