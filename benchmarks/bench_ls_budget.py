"""Local search success vs max_queries (the evaluation budget decision, benchmarks/README.md).

    OMP_NUM_THREADS=1 python benchmarks/bench_ls_budget.py 100 none-none none-fgsm

(n test images, then registry names in models/quick); JSON in benchmarks/results/ls_budget.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import advdefense
from advdefense.attacks import LocalSearch
from advdefense.data import load_mnist67
from advdefense.evaluation.threats import attackable
from advdefense.sampling import stratified_sample

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    torch.set_num_threads(1)
    x, y = load_mnist67("test")
    idx = stratified_sample(y, int(sys.argv[1]), 1)
    x, y = x[idx], y[idx]
    out = {}
    for name in sys.argv[2:]:
        model = attackable(advdefense.load_model(ROOT / "models" / "quick" / f"{name}.ckpt"))
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
        for q in (500, 1000, 2000, 5000):
            start = time.perf_counter()
            r = LocalSearch(max_queries=q, rounds=150, eval_batch=1024).run(model, x, y)
            success = r.success.float().mean().item()
            out[f"{name}/{q}"] = {"clean": clean, "success": success,
                                  "queries_mean": r.queries.float().mean().item(),
                                  "seconds": time.perf_counter() - start}
            print(name, q, out[f"{name}/{q}"], flush=True)
    dest = ROOT / "benchmarks" / "results" / "ls_budget.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
