"""checks: every input check names what is wrong and how to fix it."""

from __future__ import annotations

import os

import pytest
import torch

from advdefense.checks import (
    ConfigError,
    ImageError,
    check_choice,
    check_images,
    check_int,
    check_labels,
    check_range,
    check_writable,
)


def test_config_error_names_key_value_and_what_is_allowed():
    err = ConfigError("attack.eps", 1.5, "must be a number in [0, 1]")
    assert isinstance(err, ValueError)
    assert (err.key, err.value, err.allowed) == ("attack.eps", 1.5, "must be a number in [0, 1]")
    assert str(err) == "invalid config value attack.eps=1.5: must be a number in [0, 1]"


@pytest.mark.parametrize("images", [torch.rand(3, 1, 28, 28), torch.zeros(0, 1, 28, 28),
                                    torch.ones(1, 1, 28, 28, dtype=torch.float64)])
def test_check_images_accepts_float_batches_in_the_unit_range(images):
    check_images(images)


@pytest.mark.parametrize("images, message", [
    ([[0.5]], "must be a torch.Tensor, got list"),
    (torch.rand(1, 28, 28), "unsqueeze"),
    (torch.rand(2, 3, 28, 28), r"\(N, 1, 28, 28\), got \(2, 3, 28, 28\)"),
    (torch.rand(2, 1, 32, 32), r"got \(2, 1, 32, 32\)"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "images.float\\(\\) / 255"),
    (torch.full((1, 1, 28, 28), float("nan")), "contains NaN"),
    (torch.full((1, 1, 28, 28), 255.0), "divide by 255"),
    (torch.full((1, 1, 28, 28), -0.5), r"values in \[-0.5, -0.5\]")])
def test_check_images_says_what_is_wrong_and_how_to_fix_it(images, message):
    with pytest.raises(ImageError, match=message):
        check_images(images)


def test_check_images_other_shapes_on_request():
    check_images(torch.rand(2, 2, 28, 28), channels=2)
    check_images(torch.rand(2, 5, 9, 9), channels=None, size=None)
    with pytest.raises(ImageError, match=r"adv must have shape \(N, C, 28, 28\)"):
        check_images(torch.rand(2, 5, 9, 9), name="adv", channels=None)


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([0, 1]), "length 3"), (torch.zeros(3, 1, dtype=torch.long), "1-D"),
    (torch.tensor([0.0, 1.0, 1.0]), "integers"), (torch.tensor([0, 1, 2]), r"\[0, 1\], got \[0, 1, 2\]")])
def test_check_labels_refuses_wrong_labels(labels, message):
    check_labels(torch.tensor([0, 1, 1]), 3)
    with pytest.raises(ValueError, match=message):
        check_labels(labels, 3)


def test_check_range_bounds_open_and_closed():
    check_range("k", 0.0, 0.0, 1.0)
    check_range("k", 1.0, 0.0, 1.0)
    check_range("k", 5, 0.0, None, lo_open=True)
    for value, kwargs, allowed in [(0.0, {"lo_open": True}, r"\(0, 1\]"),
                                   (1.0, {"hi_open": True}, r"\[0, 1\)"),
                                   (float("nan"), {}, r"\[0, 1\]"), ("0.5", {}, r"\[0, 1\]")]:
        with pytest.raises(ConfigError, match=allowed):
            check_range("k", value, 0.0, 1.0, **kwargs)
    with pytest.raises(ConfigError, match=r"in \[-inf, 2\]"):
        check_range("k", 3, None, 2)


def test_check_choice_and_check_int():
    check_choice("mode", "grid", ["grid", "random"])
    with pytest.raises(ConfigError, match=r"mode='all': must be one of \['grid', 'random'\]"):
        check_choice("mode", "all", ("grid", "random"))
    check_int("steps", 1)
    check_int("restarts", 0, lo=0)
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(ConfigError, match="must be an integer >= 1"):
            check_int("steps", bad)


def test_check_writable_probes_a_folder_and_creates_nothing(tmp_path):
    check_writable("paths.models_dir", tmp_path)
    later = tmp_path / "a" / "b"
    check_writable("paths.models_dir", later)
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_writable("paths.models_dir", tmp_path / "file" / "sub")
    with pytest.raises(ConfigError, match="MiB free"):
        check_writable("paths.models_dir", tmp_path, need_bytes=2**62)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            check_writable("paths.log_dir", tmp_path)
        with pytest.raises(ConfigError, match="is not writable"):
            check_writable("paths.log_dir", tmp_path / "new")
    finally:
        tmp_path.chmod(0o700)
