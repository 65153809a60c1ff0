"""Honest evaluation: grid of models x attacks x threat models, metrics with Wilson CIs,
per-example worst case, per-cell cache, sweeps and sanity checks against gradient masking.
Nothing here knows Hydra; ``advdefense.cli.evaluate`` builds the plain arguments."""

from advdefense.evaluation.metrics import metrics_with_intervals, wilson
from advdefense.evaluation.pipeline import evaluate_models
from advdefense.evaluation.threats import THREATS, AttackSpec, EvalModel
from advdefense.evaluation.worst_case import worst_case

__all__ = ["THREATS", "AttackSpec", "EvalModel", "evaluate_models", "metrics_with_intervals",
           "wilson", "worst_case"]
