"""Training-time defenses (strategies for the training step)."""

from advdefense.defenses.base import (
    AdversarialTraining,
    MixedDefense,
    NoDefense,
    TrainingDefense,
)

__all__ = ["AdversarialTraining", "MixedDefense", "NoDefense", "TrainingDefense"]
