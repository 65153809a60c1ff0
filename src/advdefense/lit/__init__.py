"""LightningModules: the defended member and the ensembles."""

from advdefense.lit.base import ClassifierModule
from advdefense.lit.classifier import DefendedClassifier, member_pipeline
from advdefense.lit.ensemble import StackedEnsemble

__all__ = ["ClassifierModule", "DefendedClassifier", "StackedEnsemble", "member_pipeline"]
