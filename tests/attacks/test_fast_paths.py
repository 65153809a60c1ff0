"""The speed paths: ``need_success=False``, channels-last queries, precomputed spatial grids.

No timing here: each test pins what the faster path must still do (call counts, values).
"""

from __future__ import annotations

import pytest
import torch
from attack_models import tiny_cnn
from torch import nn

from advdefense.attacks import FGSM, JSMA, SpatialGrid
from advdefense.attacks.base import channels_last, predict, standard_layout
from advdefense.attacks.geometry import (
    sampling_grids,
    spatial_transform,
    warp_many,
)
from advdefense.defenses import AdversarialTraining


class _CountBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, counter):  # noqa: ANN001, ANN205 - autograd signature
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        ctx.counter.backward += 1
        return grad, None


class Counting(nn.Module):
    """Wraps a model; counts forward calls and backward passes through its output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.forward_calls, self.backward = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        return _CountBackward.apply(self.model(x), self)


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_fgsm_without_success_is_one_forward_and_backward_per_chunk() -> None:
    x, y = _data(10)
    model = Counting(tiny_cnn(0)).eval()
    attack = FGSM(eps=0.1, batch_size=4)  # chunks of 4, 4, 2
    fast = attack.run(model, x, y, need_success=False)
    assert (model.forward_calls, model.backward) == (3, 3)
    assert fast.success is None  # not computed, never guessed
    full = attack.run(model, x, y)
    assert (model.forward_calls, model.backward) == (3 + 6, 3 + 3)  # + one check per chunk
    assert torch.equal(fast.images, full.images)
    assert torch.equal(full.success, predict(model, full.images) != y)  # one more forward
    adv = attack(model, x, y)  # the plain call needs no success
    assert model.forward_calls == 10 + 3 and torch.equal(adv, full.images)


def test_adversarial_training_spends_no_forward_on_success() -> None:
    x, y = _data(8)
    model = Counting(tiny_cnn(1))
    out_x, out_y = AdversarialTraining(FGSM(eps=0.2, batch_size=256))(model, x, y)
    assert (model.forward_calls, model.backward) == (1, 1)
    assert out_x.shape == (16, 1, 28, 28) and torch.equal(out_y[8:], y)


def test_jsma_and_spatial_skip_only_the_final_check() -> None:
    x, y = _data(4)
    for attack in (JSMA(gamma=0.02), SpatialGrid(n_angles=3, n_shifts=3)):
        model = Counting(tiny_cnn(2)).eval()
        fast = attack.run(model, x, y, need_success=False)
        calls = model.forward_calls
        full = attack.run(model, x, y)
        assert fast.success is None and model.forward_calls - calls == calls + 1
        assert torch.equal(fast.images, full.images)
        assert torch.equal(full.success, predict(model, full.images) != y)


def test_channels_last_relabels_without_copy() -> None:
    x, _ = _data(3)
    cl = channels_last(x)
    assert cl.data_ptr() == x.data_ptr() and torch.equal(cl, x)
    assert cl.stride() == (784, 1, 28, 1)
    back = standard_layout(cl)
    assert back.stride() == x.stride() and back.data_ptr() == x.data_ptr()
    three = torch.rand(2, 3, 5, 5)
    assert torch.equal(channels_last(three), three)
    assert channels_last(three).is_contiguous(memory_format=torch.channels_last)


def test_attacks_leave_the_model_and_return_default_strides() -> None:
    x, y = _data(6)
    model = tiny_cnn(3).eval()
    before = {k: (v.data_ptr(), v.stride(), v.clone()) for k, v in model.state_dict().items()}
    for attack in (FGSM(eps=0.1, batch_size=4), SpatialGrid(n_angles=3, n_shifts=3)):
        out = attack(model, x, y)
        assert out.stride() == x.stride()
    for k, v in model.state_dict().items():
        assert (v.data_ptr(), v.stride()) == before[k][:2] and torch.equal(v, before[k][2])
    # channels-last queries give the model's predictions (same values up to float rounding)
    with torch.no_grad():
        torch.testing.assert_close(model(channels_last(x)), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["engstrom", "uae_warmup", "uae_20x20"])
def test_precomputed_grids_equal_per_transform_warps(preset, digits) -> None:
    attack = SpatialGrid(preset=preset)
    x = digits[0][:5]
    base = attack.border(x)
    params = attack.grid()
    many = warp_many(base, sampling_grids(params))  # (T, N, 28, 28)
    assert many.shape == (len(params), 5, 28, 28)
    for t in range(0, len(params), 37):
        one = spatial_transform(x, *params[t].tolist(), shrink=attack.shrink)
        torch.testing.assert_close(many[t].unsqueeze(1), one, atol=2e-5, rtol=0)
    # the attack caches one set of grids per device / dtype / grid
    g1 = attack.sampling_grids(base)
    assert attack.sampling_grids(base) is g1 and g1.shape == (len(params), 28, 28, 2)


@pytest.mark.parametrize("select", ["loss", "confidence"])
def test_grid_scoring_equals_per_candidate_scoring(select, undefended_cnn, digits) -> None:
    attack = SpatialGrid(preset="uae_warmup", select=select)  # with the mass check
    x, y = digits[0][:4], digits[1][:4]
    base = attack.border(x)
    params = attack.grid()[:60]
    succ, loss, ok = attack._score_grid(undefended_cnn, base, y, sampling_grids(params))
    ref_s, ref_l, ref_ok = attack._score(undefended_cnn, base, y,
                                         params.unsqueeze(0).expand(4, *params.shape))
    assert torch.equal(ok, ref_ok) and torch.equal(succ, ref_s)
    assert torch.equal(loss.isfinite(), ref_l.isfinite())
    torch.testing.assert_close(loss[ok], ref_l[ok], atol=1e-3, rtol=1e-3)
