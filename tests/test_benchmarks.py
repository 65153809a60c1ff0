"""The benchmarks' own arithmetic (their timings are not tested: they are measurements)."""

from __future__ import annotations

import importlib.util

import torch
from helpers import ROOT


def _bench_forward():
    spec = importlib.util.spec_from_file_location("bench_forward",
                                                  ROOT / "benchmarks" / "bench_forward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_per_image_counts_every_convolution_and_linear_layer() -> None:
    from advdefense.lit.classifier import member_pipeline
    from advdefense.nets import SmallCNN
    from advdefense.preprocess import Identity

    bench = _bench_forward()
    member = member_pipeline(Identity(), SmallCNN()).eval()  # 16/32 channels, hidden 128
    by_hand = 2 * (25 * 16 * 28 * 28          # conv 1 -> 16, 5x5, on 28x28
                   + 16 * 25 * 32 * 14 * 14   # conv 16 -> 32, 5x5, on 14x14
                   + 32 * 7 * 7 * 128         # linear 1,568 -> 128
                   + 128 * 2)                 # linear 128 -> 2
    assert bench.flops_per_image(member, torch.device("cpu")) == by_hand
    peak = bench.conv_peak(member, torch.device("cpu"), repeats=1)
    assert peak["input"] == [256, 16, 14, 14] and peak["gflops_per_s_cpu"] > 0
