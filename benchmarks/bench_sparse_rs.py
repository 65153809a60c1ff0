"""Sparse-RS next to the local search: the two query-only L0 attacks at the same k and budget.

Both attack the same undefended SmallCNN (trained briefly on real MNIST 6-vs-7, as in
``bench_attacks.py``) on the same stratified test digits, with pixel budget ``k`` and
``--queries`` forward queries per image; each stops per image once it is fooled. Reported per
attack: images/s (wall clock over the whole batch), forward queries/s (the cost of an image
that is never fooled is ``queries / (queries/s)``), the digits fooled, the mean queries per
image and the largest number of changed pixels (never above k).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_sparse_rs.py --n 32            # the README figures
    python benchmarks/bench_sparse_rs.py --n 200 --device cuda --out benchmarks/results/sparse_rs_cuda.json
    python benchmarks/bench_sparse_rs.py --n 8 --queries 500                # smoke run

Writes a table to stdout and JSON to ``benchmarks/results/sparse_rs.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from bench_attacks import train

from advdefense.attacks import LocalSearch, SparseRS
from advdefense.attacks.base import predict
from advdefense.data import load_mnist67
from advdefense.io import atomic_write_text
from advdefense.sampling import stratified_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32, help="test digits (stratified)")
    ap.add_argument("--k", type=int, nargs="+", default=[20], help="pixel budgets")
    ap.add_argument("--queries", type=int, default=10_000, help="queries per image")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the model is trained on CPU)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sparse_rs.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = train(2, 4096).to(args.device, memory_format=torch.channels_last)
    images, labels = load_mnist67("test")
    idx = stratified_sample(labels, args.n, 0)
    x, y = images[idx].to(args.device), labels[idx].to(args.device)
    clean = float((predict(model, x) == y).double().mean())
    rows = []
    for k in args.k:
        for name, attack in (("sparse_rs", SparseRS(k=k, max_queries=args.queries)),
                             ("local_search", LocalSearch(k=k, max_queries=args.queries,
                                                          eval_batch=1024))):
            start = time.perf_counter()
            res = attack.run(model, x, y)
            sec = time.perf_counter() - start
            rows.append({"attack": name, "k": k, "queries": args.queries, "n": len(y),
                         "seconds": round(sec, 2), "images_per_s": round(len(y) / sec, 3),
                         "queries_per_s": round(float(res.queries.sum()) / sec, 1),
                         "fooled": int(res.success.sum()),
                         "accuracy": round(1 - float(res.success.double().mean()), 4),
                         "mean_queries": round(float(res.queries.double().mean()), 1),
                         "max_l0": int((res.images != x).flatten(1).sum(1).max())})
            r = rows[-1]
            print(f"{name:>12} k={k:<3} {r['images_per_s']:8.3f} img/s {r['queries_per_s']:9.1f} "
                  f"q/s  fooled {r['fooled']}/{r['n']}  mean queries {r['mean_queries']:8.1f}  "
                  f"max L0 {r['max_l0']}", flush=True)
    meta = {"clean_accuracy": clean, "threads": args.threads, "machine": platform.machine(),
            "device": args.device, "cuda": torch.cuda.get_device_name() if "cuda" in args.device
            else None,
            "cpus": os.cpu_count(), "torch": torch.__version__, "model": "SmallCNN, 2 epochs "
            "on 4,096 training digits (undefended)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
