"""nets: the member CNN and the stacker MLP, shapes, settings and refused settings."""

from __future__ import annotations

import pytest
import torch

from advdefense.checks import ConfigError
from advdefense.nets import SmallCNN, StackerMLP


@pytest.mark.parametrize("kwargs, in_channels", [({}, 1), ({"channels": [4, 8], "hidden": 16}, 1),
                                                 ({"in_channels": 2, "num_classes": 3}, 2)])
def test_small_cnn_maps_a_batch_to_logits(kwargs, in_channels):
    net = SmallCNN(**kwargs).eval()
    out = net(torch.rand(5, in_channels, 28, 28))
    assert out.shape == (5, kwargs.get("num_classes", 2)) and torch.isfinite(out).all()
    # one image at a time gives the same logits as the batch (no cross-example state)
    x = torch.rand(3, in_channels, 28, 28)
    torch.testing.assert_close(net(x)[1:2], net(x[1:2]))


def test_small_cnn_widths_are_the_configured_ones():
    net = SmallCNN(channels=[3, 5], hidden=7)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [3, 5]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(5 * 7 * 7, 7), (7, 2)]


@pytest.mark.parametrize("kwargs, key", [
    ({"channels": [16]}, "model.net.channels"), ({"channels": [16, 0]}, "model.net.channels"),
    ({"hidden": 0}, "model.net.hidden"), ({"dropout": 1.0}, "model.net.dropout"),
    ({"dropout": -0.1}, "model.net.dropout"), ({"in_channels": True}, "model.net.in_channels"),
    ({"in_channels": 0}, "model.net.in_channels")])
def test_small_cnn_refuses_bad_settings_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        SmallCNN(**kwargs)


def test_dropout_acts_in_training_mode_only():
    torch.manual_seed(0)
    net, x = SmallCNN(dropout=0.5), torch.rand(4, 1, 28, 28)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


def test_stacker_mlp_layers_and_shape():
    head = StackerMLP(6, [8, 4], activation="tanh")
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(6, 8), (8, 4), (4, 2)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in head.mlp) == 2
    assert head(torch.randn(3, 6)).shape == (3, 2)
    assert len(StackerMLP(6, [], activation="linear").mlp) == 1  # no hidden layer: one Linear


def test_skip_mean_starts_as_the_mean_of_the_member_logits_and_learns_a_correction():
    head = StackerMLP(6, [8], skip="mean")  # three members x two logits
    logits = torch.randn(5, 6)
    torch.testing.assert_close(head(logits), logits.view(5, 3, 2).mean(1))
    with torch.no_grad():
        head.mlp[-1].bias.fill_(1.0)
    torch.testing.assert_close(head(logits), logits.view(5, 3, 2).mean(1) + 1.0)


@pytest.mark.parametrize("kwargs, key", [
    ({"activation": "sigmoid"}, "model.stacker.activation"), ({"skip": "max"}, "model.skip"),
    ({"in_features": 0}, "model.stacker.in_features"),
    ({"in_features": 5, "skip": "mean"}, "model.stacker.in_features")])
def test_stacker_mlp_refuses_bad_settings_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        StackerMLP(**({"in_features": 6} | kwargs))
