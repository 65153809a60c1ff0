"""Agreement with an independent implementation (torchattacks), when it is importable.

torchattacks is a benchmark-only extra (``pip install --no-deps torchattacks==3.5.1``); it
imports without torchvision. The comparison is skipped, with this reason, where it is absent.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from advdefense.attacks import FGSM, PGD
from advdefense.attacks.base import predict

HAVE_TA = importlib.util.find_spec("torchattacks") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TA, reason="torchattacks not installed (benchmark-only extra: "
                    "pip install --no-deps torchattacks==3.5.1)")
def test_accuracy_matches_torchattacks(undefended_cnn, mnist67_test) -> None:
    import torchattacks as ta

    x, y = mnist67_test[0][:200], mnist67_test[1][:200]
    model = undefended_cnn

    def acc(adv: torch.Tensor) -> float:
        return 100 * (predict(model, adv) == y).float().mean().item()

    fgsm_ours, fgsm_ref = acc(FGSM(eps=0.2)(model, x, y)), acc(ta.FGSM(model, eps=0.2)(x, y))
    assert abs(fgsm_ours - fgsm_ref) <= 1.0
    # without random start both are deterministic: seed noise (about +-1 point on 200 images
    # at 10 steps) cannot hide a real difference
    pgd_ref = acc(ta.PGD(model, eps=0.2, alpha=0.02, steps=10, random_start=False)(x, y))
    pgd_ours = acc(PGD(eps=0.2, alpha=0.02, steps=10, random_start=False)(model, x, y))
    assert pgd_ours <= pgd_ref + 1.0
