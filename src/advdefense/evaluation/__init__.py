"""Honest evaluation: grid of models x attacks x threat models, metrics with Wilson CIs,
per-example worst case, per-cell cache, sweeps and sanity checks against gradient masking.
Nothing here knows Hydra; ``advdefense.cli.evaluate`` builds the plain arguments."""

from advdefense.evaluation.metrics import classification_metrics, wilson
from advdefense.evaluation.pipeline import evaluate_models
from advdefense.evaluation.threats import THREATS, AttackSpec, EvalModel
from advdefense.evaluation.worst_case import worst_case

__all__ = ["THREATS", "AttackSpec", "EvalModel", "classification_metrics", "evaluate_models",
           "wilson", "worst_case"]
