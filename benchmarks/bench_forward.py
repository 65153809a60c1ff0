"""The integrated model's forward pass, plain vs fast path, in one run.

The model is ``experiment=robust``'s integrated model: ``stacker_adv_mean`` over
``none-pgd_spatial_uae_l0k30_wide`` (SmallCNN channels [32, 64], hidden 256, no preprocessing) and
``squeeze-pgd_spatial_uae_l0k30`` (median 3x3 + 1-bit squeeze, default SmallCNN). With
``--models-dir`` holding that registry the trained entry is loaded; otherwise the same
architecture is built with untrained (seeded) weights; speed does not depend on the weights.

* ``plain``: what the attacks got before the fast path, ``attackable(model, fast=False)``
  (a channels-last copy without the input check);
* ``fast``: ``attackable(model)``, what the evaluation's attacks get now
  (:func:`advdefense.fastpath.optimize`).

Modes: ``forward`` (``torch.inference_mode``: query attacks, grids, predictions) and
``forward+backward`` (the input gradient of the summed cross-entropy, as
``advdefense.attacks.base.input_grad`` computes it: gradient attacks). Each (threads, batch,
mode) cell times plain and fast alternately, ``--repeats`` times each after a warm-up, and
reports the median images/s by wall clock and by CPU time of the process (the CPU is shared,
so wall clock is noisy; CPU time counts this process's work only). Images: MNIST 6-vs-7 test
digits when ``data/mnist67.npz`` exists, else uniform noise in [0, 1]. Before timing, the
fast logits and input gradients are compared with the plain ones.

Roofline: the model's FLOPs per image (every convolution and linear layer) and, in the same run,
the GFLOP/s of its costliest convolution alone (channels-last, batch 256, one thread). The
one-thread forward rows then say which share of that rate plain and fast reach, and the meta
gives the ceiling in images/s: no exact fast path can go beyond it without doing fewer FLOPs.

Usage::

    python benchmarks/bench_forward.py                     # untrained robust architecture
    python benchmarks/bench_forward.py --models-dir models/robust

Writes a table to stdout and JSON to ``benchmarks/results/forward.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from advdefense.attacks.base import channels_last  # noqa: E402
from advdefense.evaluation.threats import attackable  # noqa: E402

ENSEMBLE = "stacker_adv_mean"


def robust_model(models_dir: str | None) -> tuple[nn.Module, str]:
    """The robust integrated model (registry entry if there, else untrained), and its source."""
    from advdefense.registry import CheckedModel, load_model, model_path

    if models_dir and model_path(models_dir, ENSEMBLE).is_file():
        return load_model(model_path(models_dir, ENSEMBLE)), str(model_path(models_dir, ENSEMBLE))
    from advdefense.ensembles import build_ensemble
    from advdefense.lit.classifier import member_pipeline
    from advdefense.nets import SmallCNN, StackerMLP
    from advdefense.preprocess import FeatureSqueeze, Identity

    torch.manual_seed(0)
    members = {"none-pgd_spatial_uae_l0k30_wide": member_pipeline(Identity(), SmallCNN([32, 64], 256)),
               "squeeze-pgd_spatial_uae_l0k30": member_pipeline(FeatureSqueeze(3, 1, True), SmallCNN())}
    head = StackerMLP(4, [256, 256], skip="mean")
    for p in head.parameters():  # skip=mean starts the last layer at zero: give it weights
        nn.init.normal_(p, std=0.05)
    model = build_ensemble("mlp", members, head)
    return CheckedModel(model, ENSEMBLE, "ensemble").eval(), "untrained robust architecture"


def images(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    path = ROOT / "data" / "mnist67.npz"
    if path.is_file():
        from advdefense.data import load_mnist67

        x, y = load_mnist67("test", str(path.parent))
        return x[:n].contiguous(), y[:n].contiguous(), "mnist67 test"
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 2, (n,), generator=g), "uniform"


def forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(channels_last(x))


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xx = channels_last(x.detach()).requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xx), y, reduction="sum")
    return torch.autograd.grad(loss, xx)[0]


MODES = {"forward": forward, "forward+backward": forward_backward}


def flops_per_image(model: nn.Module, device: torch.device) -> float:
    """Multiply-adds x 2 of one forward pass per image, counted over every ``Conv2d`` and
    ``Linear`` the model runs (hooks on 8 forwards of one image); elementwise work not counted."""
    total = [0.0]

    def conv(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        total[0] += 2.0 * k * out[0].numel()

    def linear(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        total[0] += 2.0 * m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            for _ in range(8):  # one image at a time: per-image counts
                model(torch.rand(1, 1, 28, 28, device=device))
    finally:
        for h in hooks:
            h.remove()
    return total[0] / 8


def conv_peak(model: nn.Module, device: torch.device, repeats: int) -> dict:
    """GFLOP/s of the model's costliest convolution alone (channels-last, batch 256, forward),
    by CPU time of this process: what a perfectly efficient pass could reach on this machine."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    conv = max(convs, key=lambda m: m.in_channels * m.out_channels * m.kernel_size[0] ** 2)
    size = 14 if conv.in_channels > 1 else 28  # the SmallCNN's second convolution sees 14x14
    x = torch.rand(256, conv.in_channels, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    flops = 2.0 * 256 * size * size * conv.out_channels * conv.in_channels * conv.kernel_size[0] ** 2
    with torch.inference_mode():
        conv(x)
        times = []
        for _ in range(repeats):
            c0 = time.process_time()
            conv(x)
            times.append(time.process_time() - c0)
    return {"layer": repr(conv), "input": [256, conv.in_channels, size, size],
            "gflops_per_s_cpu": round(flops / statistics.median(times) / 1e9, 1)}


def compare(plain: nn.Module, fast: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Largest differences of logits and input gradients, fast vs plain."""
    out = {}
    for name, fn in (("logits", lambda m: forward(m, x, y)),
                     ("input_grad", lambda m: forward_backward(m, x, y))):
        a, b = fn(plain), fn(fast)
        out[f"{name}_max_abs_diff"] = float((a - b).abs().max())
        out[f"{name}_max_abs"] = float(a.abs().max())
    return out


def time_cell(models: dict[str, nn.Module], fn, x: torch.Tensor, y: torch.Tensor,
              repeats: int) -> dict[str, dict]:
    """Interleaved timing: one call of each model per round; medians over rounds."""
    for m in models.values():
        fn(m, x, y)  # warm-up
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for name, m in models.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn(m, x, y)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    n = len(x)
    return {k: {"images_per_s_wall": round(n / statistics.median(wall[k]), 1),
                "images_per_s_cpu": round(n / statistics.median(cpu[k]), 1),
                "wall_s": [round(t, 4) for t in wall[k]]} for k in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", default=None, help="registry of experiment=robust")
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per model and cell")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "forward.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    model, source = robust_model(args.models_dir)
    model = model.to(device)
    models = {"plain": attackable(model, fast=False), "fast": attackable(model)}
    x_all, y_all, data = images(max(args.batches))
    x_all, y_all = x_all.to(device), y_all.to(device)
    check = compare(models["plain"], models["fast"], x_all[:256], y_all[:256])
    noise = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(1)).to(device)
    check |= {f"uniform_{k}": v for k, v in
              compare(models["plain"], models["fast"], noise, y_all[:256]).items()}
    print("fast vs plain:", check, flush=True)
    meta = {"model": source, "images": data, "device": str(device), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor(), "repeats": args.repeats,
            "loadavg_start": os.getloadavg(), "check": check,
            "command": "python benchmarks/bench_forward.py " + " ".join(sys.argv[1:])}
    flops = flops_per_image(models["plain"], device)
    torch.set_num_threads(1)
    peak = conv_peak(models["plain"], device, args.repeats)
    meta["roofline"] = {"mflop_per_image": round(flops / 1e6, 2), "conv_peak_1_thread": peak,
                        "ceiling_images_per_s_1_thread": round(peak["gflops_per_s_cpu"] * 1e9 / flops)}
    print(f"{flops / 1e6:.1f} MFLOP per image; the costliest convolution alone runs at "
          f"{peak['gflops_per_s_cpu']} GFLOP/s (one thread): a forward pass at that rate would be "
          f"{meta['roofline']['ceiling_images_per_s_1_thread']} images/s", flush=True)
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            x, y = x_all[:batch], y_all[:batch]
            for mode, fn in MODES.items():
                load = os.getloadavg()[0]
                cell = time_cell(models, fn, x, y, args.repeats)
                row = {"threads": threads, "batch": batch, "mode": mode, "loadavg": load,
                       "plain": cell["plain"], "fast": cell["fast"],
                       "speedup_wall": round(cell["fast"]["images_per_s_wall"]
                                             / cell["plain"]["images_per_s_wall"], 2),
                       "speedup_cpu": round(cell["fast"]["images_per_s_cpu"]
                                            / cell["plain"]["images_per_s_cpu"], 2)}
                if mode == "forward" and threads == 1:  # share of the one-thread ceiling
                    for k in ("plain", "fast"):
                        row[k]["gflops_per_s_cpu"] = round(
                            cell[k]["images_per_s_cpu"] * flops / 1e9, 1)
                        row[k]["share_of_conv_peak"] = round(
                            row[k]["gflops_per_s_cpu"] / peak["gflops_per_s_cpu"], 2)
                results.append(row)
                print_row(row)
    meta["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")


def print_row(row: dict) -> None:
    if not print_row.header:
        print(f"{'thr':>3s} {'batch':>5s} {'mode':17s} {'plain img/s':>12s} {'fast img/s':>11s} "
              f"{'x wall':>7s} {'plain cpu':>10s} {'fast cpu':>9s} {'x cpu':>6s} {'load':>5s}")
        print_row.header = True
    p, f = row["plain"], row["fast"]
    print(f"{row['threads']:3d} {row['batch']:5d} {row['mode']:17s} "
          f"{p['images_per_s_wall']:12.0f} {f['images_per_s_wall']:11.0f} {row['speedup_wall']:6.2f}x "
          f"{p['images_per_s_cpu']:10.0f} {f['images_per_s_cpu']:9.0f} {row['speedup_cpu']:5.2f}x "
          f"{row['loadavg']:5.1f}", flush=True)


print_row.header = False

if __name__ == "__main__":
    main()
