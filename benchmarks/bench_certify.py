"""Certification throughput of a randomized-ablation model: images/s and samples/s.

Certifies the first ``--images`` of a stratified subset of the 1,986 test digits with ``--n``
samples per image (plus n0 = 100 selection samples), with the given thread counts, and
extrapolates the time to certify all 1,986 test images at N = 10,000 (the issue's budget:
<= 15 min on 2 CPU cores). Uses a registered model if ``--ckpt`` is given (its certified
accuracy at radius 8 and 16 is printed too), else an untrained AblationMLP of the same shape
(speed only: the work per sample does not depend on the weights).

Usage::

    python benchmarks/bench_certify.py --images 64 --n 10000 --threads 2 1
    python benchmarks/bench_certify.py --ckpt models/robust/ablation-k20.ckpt --images 200

Writes a table to stdout and JSON to ``benchmarks/results/certify.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from advdefense.ablation import AblatedClassifier, AblationMLP
from advdefense.certify import certify
from advdefense.data import load_mnist67
from advdefense.io import atomic_write_text
from advdefense.registry import load_model
from advdefense.sampling import stratified_sample

ROOT = Path(__file__).resolve().parents[1]
TEST_IMAGES = 1986


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=None, help="a registered ablation model (default: untrained)")
    p.add_argument("--keep", type=int, default=45, help="pixels kept (untrained model only)")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16384)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "certify.json"))
    args = p.parse_args()

    images, labels = load_mnist67("test")
    idx = stratified_sample(labels, args.images, 0)
    x, y = images[idx], labels[idx]
    if args.ckpt:
        model = load_model(args.ckpt)
        name = Path(args.ckpt).stem
    else:
        torch.manual_seed(0)
        model = AblatedClassifier(AblationMLP(), keep=args.keep).eval()
        name = f"untrained AblationMLP keep={args.keep}"
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        start = time.perf_counter()
        cert = certify(model, x, y, args.n0, args.n, 0.001, args.batch_size,
                       torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
        samples = len(y) * (args.n + args.n0)
        full_min = TEST_IMAGES * (10_000 + args.n0) / (samples / seconds) / 60
        acc = cert.accuracy_at([0, 8, 16])
        rows.append({"threads": threads, "images": len(y), "n": args.n, "seconds": round(seconds, 2),
                     "images_per_s": round(len(y) / seconds, 3),
                     "samples_per_s": round(samples / seconds),
                     "minutes_all_1986_at_N10000": round(full_min, 1),
                     "certified_acc_r0": acc[0], "certified_acc_r8": acc[1],
                     "certified_acc_r16": acc[2]})
        print(" | ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    payload = {"model": name, "keep": cert.keep, "batch_size": args.batch_size,
               "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
               "load_average": os.getloadavg(), "rows": rows}
    atomic_write_text(args.out, json.dumps(payload, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
