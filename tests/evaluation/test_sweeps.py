"""The spatial sweep's transform (the spatial attack's warp) and its rows."""

from __future__ import annotations

import torch
from torch import nn

from advdefense.attacks.geometry import spatial_transform
from advdefense.evaluation.sweeps import spatial_sweep
from advdefense.evaluation.threats import EvalModel


def _dot(y: int, x: int) -> torch.Tensor:
    """One (1, 1, 28, 28) image, black but for pixel (row y, column x)."""
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, y, x] = 1.0
    return image


def _where(image: torch.Tensor) -> tuple[int, int]:
    flat = int(image.flatten().argmax())
    return divmod(flat, 28)


def test_rotation_is_about_the_centre_and_counterclockwise() -> None:
    image = _dot(13, 22)  # right of the centre (13.5, 13.5)
    up = spatial_transform(image, 90.0, 0.0, 0.0)  # counterclockwise as displayed: to the top
    assert _where(up) == (5, 13) and float(up.max()) > 0.99
    down = spatial_transform(image, -90.0, 0.0, 0.0)
    assert _where(down) == (22, 14) and float(down.max()) > 0.99
    half = spatial_transform(image, 180.0, 0.0, 0.0)
    assert _where(half) == (14, 5)
    assert torch.allclose(spatial_transform(image, 0.0, 0.0, 0.0), image)
    assert abs(float(up.sum()) - 1.0) < 1e-4  # bilinear at whole quarter turns: nothing lost


def test_shifts_move_right_and_down_with_black_fill() -> None:
    image = _dot(10, 10)
    assert _where(spatial_transform(image, 0.0, 3.0, 0.0)) == (10, 13)
    assert _where(spatial_transform(image, 0.0, 0.0, 2.0)) == (12, 10)
    assert float(spatial_transform(image, 0.0, 0.0, 20.0).abs().sum()) == 0.0  # pushed out


class TopHalf(nn.Module):
    """Class 1 when there is more ink in rows 0-13 than in rows 14-27, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = x[:, :, :14].sum((1, 2, 3)), x[:, :, 14:].sum((1, 2, 3))
        return torch.stack([torch.zeros_like(top), top - bottom], 1)


def test_spatial_sweep_rows_follow_the_transform() -> None:
    images = torch.cat([_dot(13, 22), _dot(12, 3)])  # both in the top half: class 1
    labels = torch.tensor([1, 1])
    rows = spatial_sweep([EvalModel("top", TopHalf(), "d")], images, labels,
                         angles=[-90, 0, 90], shifts=[-3, 10])
    got = {(r["kind"], r["value"]): r["accuracy"] for r in rows}
    assert got == {("angle", -90.0): 0.5,  # the right dot goes down, the left one up
                   ("angle", 0.0): 1.0, ("angle", 90.0): 0.5,
                   ("dx", -3.0): 1.0, ("dx", 10.0): 0.5,  # the right dot leaves the frame
                   ("dy", -3.0): 1.0, ("dy", 10.0): 0.0}
    assert all(r["n"] == 2 and r["model"] == "top" for r in rows)
