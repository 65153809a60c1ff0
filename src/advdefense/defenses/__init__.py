"""Training-time defenses (strategies for the training step)."""

from advdefense.defenses.base import (
    AdversarialTraining,
    MixedDefense,
    NoDefense,
    TrainingDefense,
)
from advdefense.defenses.blackbox import BlackBoxAugmentation

__all__ = ["AdversarialTraining", "BlackBoxAugmentation", "MixedDefense", "NoDefense", "TrainingDefense"]
