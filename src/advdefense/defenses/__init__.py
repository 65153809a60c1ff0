"""Training-time defenses (strategies for the training step)."""

from advdefense.defenses.base import (
    AdversarialTraining,
    MixedDefense,
    TrainingDefense,
)
from advdefense.defenses.blackbox import BlackBoxAugmentation

__all__ = ["AdversarialTraining", "BlackBoxAugmentation", "MixedDefense", "TrainingDefense"]
