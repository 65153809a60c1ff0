"""Spatial grid: reproducible outputs, finds the one failing transform, UAE validity, sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advdefense.attacks import SpatialGrid
from advdefense.attacks.geometry import spatial_transform


class FailsOnlyAt(nn.Module):
    """Predicts class 0 everywhere except on images equal to one of ``refs`` (then class 1)."""

    def __init__(self, refs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("refs", refs.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x.flatten(1)[:, None] - self.refs[None]).abs().amax(-1).amin(1)
        hit = (dist < 1e-4).float()
        return torch.stack([1.0 - hit, hit], 1) * 5.0


def test_grid_sizes() -> None:
    assert SpatialGrid().grid().shape == (775, 3)
    assert SpatialGrid(preset="uae_warmup").grid().shape == (275, 3)
    uae = SpatialGrid(preset="uae_warmup").grid()
    assert (uae == 0).all(1).any()  # identity is part of the uae grid
    assert set(uae[:, 0].tolist()) == {float(a) for a in range(-10, 11, 2)}
    assert set(uae[:, 1].tolist()) == {-10.0, -5.0, 0.0, 5.0, 10.0}


def test_outputs_reproduced_by_reported_parameters(undefended_cnn, digits) -> None:
    x, y = digits[0][:6], digits[1][:6]
    for attack in (SpatialGrid(n_angles=7), SpatialGrid(preset="uae_warmup", n_angles=5),
                   SpatialGrid(mode="random", k=20, seed=1)):
        res = attack.run(undefended_cnn, x, y)
        again = attack.transform(x, res.info["angle"], res.info["dx"], res.info["dy"])
        torch.testing.assert_close(res.images, again, atol=1e-6, rtol=0)
        assert not torch.equal(res.images, x)  # something happened
        assert res.info["angle"].abs().max() <= attack.max_angle
        assert res.info["dx"].abs().max() <= attack.max_shift


def test_grid_finds_the_single_failing_transform(digits) -> None:
    x = digits[0][:3]
    y = torch.zeros(3, dtype=torch.int64)
    angle = torch.tensor([12.0, -30.0, 0.0])
    dx, dy = torch.tensor([1.5, 0.0, -3.0]), torch.tensor([-3.0, 3.0, 0.0])
    model = FailsOnlyAt(spatial_transform(x, angle, dx, dy))
    res = SpatialGrid(eval_batch=1000).run(model, x, y)
    assert res.success.all()
    assert torch.equal(res.info["angle"], angle)
    assert torch.equal(res.info["dx"], dx) and torch.equal(res.info["dy"], dy)
    assert (res.queries == 775).all()


@pytest.mark.parametrize("preset", ["uae_warmup", "uae_20x20"])
def test_uae_mass_check_rejects_lossy_transforms(preset, digits) -> None:
    attack = SpatialGrid(preset=preset)
    x = attack.border(digits[0][:8])
    mass = x.sum((1, 2, 3))
    gone = spatial_transform(x, 0.0, 10.0, 10.0)  # the digit leaves the frame partly
    lost = 1 - gone.sum((1, 2, 3)) / mass
    assert (lost >= 0.1).any()
    assert torch.equal(attack.allowed(x, gone), lost.abs() < 0.1)
    assert attack.allowed(x, x).all()
    # the attack never returns a disallowed transform and skips (does not query) them
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    res = attack.run(model, digits[0][:8], digits[1][:8])
    assert attack.allowed(x, res.images).all()
    assert (res.queries < 275).any() and (res.queries >= 1).all()


@pytest.mark.parametrize(("preset", "lo", "hi"), [("uae_warmup", 2, 26), ("uae_20x20", 4, 24)])
def test_uae_border_layout(preset, lo, hi, digits) -> None:
    x = SpatialGrid(preset=preset).border(digits[0][:4])
    border = torch.ones(28, 28, dtype=torch.bool)
    border[lo:hi, lo:hi] = False
    assert (x[:, 0][:, border] == 0).all()
    assert (x[:, 0][:, lo:hi, lo:hi].amax((1, 2)) > 0.5).all()  # the digit is there


def test_random_mode_is_seeded(undefended_cnn, digits) -> None:
    x, y = digits[0][:4], digits[1][:4]
    a = SpatialGrid(mode="random", k=5, seed=3).run(undefended_cnn, x, y)
    b = SpatialGrid(mode="random", k=5, seed=3).run(undefended_cnn, x, y)
    assert torch.equal(a.images, b.images) and (a.queries == 5).all()


@pytest.mark.parametrize("kwargs", [dict(preset="bogus"), dict(max_angle=-1.0),
                                    dict(n_angles=0), dict(mode="walk"), dict(k=0),
                                    dict(mass_tolerance=0.0)])
def test_bad_parameters(kwargs) -> None:
    from advdefense.checks import ConfigError

    with pytest.raises(ConfigError):
        SpatialGrid(**kwargs)


def test_sign_convention() -> None:
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 13, 20] = 1.0  # right of the centre (13.5, 13.5)
    up = spatial_transform(img, 90.0, 0.0, 0.0)  # counterclockwise: right -> up
    assert up[0, 0].argmax().item() == 7 * 28 + 13
    moved = spatial_transform(img, 0.0, 2.0, 3.0)  # +dx right, +dy down
    assert moved[0, 0, 16, 22] == pytest.approx(1.0, abs=1e-5)


def test_presets_follow_the_warmup_kit() -> None:
    kit = SpatialGrid(preset="uae_warmup")
    assert (kit.shrink, kit.mass_tolerance) == ("kit", 0.1)
    assert (kit.max_angle, kit.max_shift, kit.n_angles, kit.n_shifts) == (10.0, 10.0, 11, 5)
    old = SpatialGrid(preset="uae_20x20")
    assert (old.shrink, old.mass_tolerance, len(old.grid())) == ("20x20", 0.1, 275)
    assert SpatialGrid(preset="engstrom").shrink == "none"
    assert SpatialGrid(shrink=True).shrink == "20x20" and SpatialGrid(shrink=False).shrink == "none"


def test_kit_border_hand_computed_pixels() -> None:
    """TF1 bilinear 28 -> 24 (output j reads the source at j * 7 / 6), then a 2 px border."""
    from advdefense.attacks.geometry import legacy_resize_weights

    w = legacy_resize_weights(28, 24)
    assert torch.allclose(w.sum(1), torch.ones(24, dtype=torch.float64))
    # output 7 reads 8 1/6: 5/6 of pixel 8 and 1/6 of pixel 9; output 23 reads 26 5/6
    assert w[7, 8] == pytest.approx(5 / 6) and w[7, 9] == pytest.approx(1 / 6)
    assert w[23, 26] == pytest.approx(1 / 6) and w[23, 27] == pytest.approx(5 / 6)
    attack = SpatialGrid(preset="uae_warmup")
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 7, 9] = 1.0  # row 7 = 6 * 7/6 is read only by output row 6 (weight 1);
    # column 9 by output 7 (at 8 1/6: 1/6) and output 8 (at 9 1/3: 2/3); +2 px border
    out = attack.border(x)[0, 0]
    expected = torch.zeros(28, 28)
    expected[8, 9], expected[8, 10] = 1 / 6, 2 / 3
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # the identity transform and a whole-pixel shift (+5 right, -5 = up) move it exactly
    same = attack.transform(x, 0.0, 0.0, 0.0)[0, 0]
    torch.testing.assert_close(same, expected, atol=1e-5, rtol=0)
    moved = attack.transform(x, 0.0, 5.0, -5.0)[0, 0]
    shifted = torch.zeros(28, 28)
    shifted[3, 14], shifted[3, 15] = 1 / 6, 2 / 3
    torch.testing.assert_close(moved, shifted, atol=1e-5, rtol=0)
    # the bottom-right source pixel: output 23 (+2 = 25) with 5/6 in each direction
    corner = torch.zeros(1, 1, 28, 28)
    corner[0, 0, 27, 27] = 1.0
    out = attack.border(corner)[0, 0]
    assert out[25, 25].item() == pytest.approx(25 / 36, abs=1e-6)
    assert out.sum().item() == pytest.approx(25 / 36, abs=1e-6)
    # rotation about the frame's centre (13.5, 13.5): 90 degrees counterclockwise takes
    # (row 8, col 10) to (row 17, col 8)
    turned = attack.transform(x, 90.0, 0.0, 0.0)[0, 0]
    assert turned[17, 8].item() == pytest.approx(2 / 3, abs=1e-5)
    assert turned[18, 8].item() == pytest.approx(1 / 6, abs=1e-5)


def test_kit_mass_check_is_ten_percent_of_the_bordered_image(digits) -> None:
    attack = SpatialGrid(preset="uae_warmup")
    x = digits[0][:16]
    before = attack.border(x)
    params = attack.grid()
    for t in range(0, len(params), 17):
        after = attack.transform(x, *params[t].tolist())
        m0, m1 = before.abs().sum((1, 2, 3)), after.abs().sum((1, 2, 3))
        assert torch.equal(attack.allowed(before, after), (m1 - m0).abs() < 0.1 * m0)
