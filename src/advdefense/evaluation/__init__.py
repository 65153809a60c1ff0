"""Honest evaluation: grid of models x attacks x threat models, metrics with Wilson CIs,
per-example worst case, per-cell cache, sweeps and sanity checks against gradient masking.

Typed core: :class:`~advdefense.evaluation.cells.Cell` (one model x attack row x threat on the
images it covers) and :class:`~advdefense.evaluation.cells.ResultSet`; the rules (budgets,
sweep / sanity / certification settings, device) live in :mod:`advdefense.evaluation.settings`.
Nothing here knows Hydra; ``advdefense.cli.evaluate`` builds the settings."""

from advdefense.evaluation.cells import Cell, ResultSet
from advdefense.evaluation.metrics import metrics_with_intervals, wilson
from advdefense.evaluation.pipeline import evaluate_models
from advdefense.evaluation.settings import EvalSettings
from advdefense.evaluation.threats import THREATS, AttackSpec, EvalModel
from advdefense.evaluation.worst_case import worst_case

__all__ = ["THREATS", "AttackSpec", "Cell", "EvalModel", "EvalSettings", "ResultSet",
           "metrics_with_intervals", "evaluate_models", "wilson", "worst_case"]
