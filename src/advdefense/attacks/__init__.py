"""Attacks sharing one call convention: ``attack(model, images, labels) -> images``."""

from advdefense.attacks.base import Attack, AttackResult, eval_mode, input_grad, predict

__all__ = ["Attack", "AttackResult", "eval_mode", "input_grad", "predict"]
