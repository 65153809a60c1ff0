"""advdefense: train and honestly evaluate adversarially defended MNIST 6-vs-7 classifiers.

Public API for other tools::

    import advdefense
    model = advdefense.load_model("models/none-fgsm.ckpt")   # nn.Module, eval mode, CPU
    logits = model(images)   # images (N, 1, 28, 28) float in [0, 1] -> (N, 2), index 0 = digit 6
"""

from advdefense.registry import load_model

__all__ = ["load_model"]
__version__ = "0.1.0"
