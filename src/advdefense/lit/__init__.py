"""LightningModules: the defended member and the ensembles."""

from advdefense.lit.classifier import DefendedClassifier, member_pipeline

__all__ = ["DefendedClassifier", "member_pipeline"]
