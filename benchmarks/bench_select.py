"""Cost and effect of keeping the most confident wrong answer (the grid's ``select``).

For every model of a registry and every attack row the grid runs with ``early_stop`` /
``select`` (PGD, sparse PGD, both spatial grids), the white-box attack runs twice on the same
``--n`` stratified test images, with the grid's own settings (``conf/evaluate.yaml`` composed
as ``evaluate.py`` would):

* ``first``: ``early_stop=true, select=loss``: the grid's former setting (a fooled image keeps
  its first fooling point, barely over the boundary);
* ``confident``: ``early_stop=false, select=confidence``: the grid's setting now (keep
  attacking after the first success, keep the most confident wrong answer).

It reports per (model, attack) the seconds of each, accuracy (equal by construction: the
script fails if not), accuracy at 80% coverage of each, and the mean forward passes per image.

    OMP_NUM_THREADS=1 python benchmarks/bench_select.py --models-dir models/quick --n 100

Writes a table to stdout and JSON to ``benchmarks/results/select.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["pgd", "sparse_pgd", "spatial_engstrom", "spatial_uae"]
MODES = {"first": dict(early_stop=True, select="loss"),
         "confident": dict(early_stop=False, select="confidence")}


def grid_attack_nodes() -> dict:
    """The grid's attack nodes (``eval.attacks``) from ``conf/evaluate.yaml``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"paths.root_dir={ROOT}"])
    return {name: cfg.eval.attacks[name] for name in ROWS if name in cfg.eval.attacks}


def stratified(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    parts = []
    for c in (0, 1):
        idx = (labels == c).nonzero().flatten()
        parts.append(idx[torch.randperm(len(idx), generator=g)[: n // 2 + (c == 0) * (n % 2)]])
    return torch.cat(parts).sort().values


def main() -> None:
    from advdefense.cli.common import build
    from advdefense.data import load_mnist67
    from advdefense.evaluation.metrics import accuracy_at_coverage
    from advdefense.registry import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", default=str(ROOT / "models" / "quick"))
    ap.add_argument("--models", nargs="*", default=None, help="registry names (default: all)")
    ap.add_argument("--n", type=int, default=100, help="stratified test images")
    ap.add_argument("--rows", nargs="*", default=ROWS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "select.json"))
    args = ap.parse_args()
    models_dir = Path(args.models_dir)
    names = args.models or sorted(p.stem for p in models_dir.glob("*.ckpt"))
    if not names:
        raise SystemExit(f"no models in {models_dir}: train some (python train.py "
                         "experiment=paper_quick pipeline.evaluate=false)")
    images, labels = load_mnist67("test")
    idx = stratified(labels, args.n)
    x, y = images[idx], labels[idx]
    nodes = grid_attack_nodes()
    rows = []
    print(f"{'model':18s} {'attack':17s} {'acc':>6s} {'acc@80 first':>12s} "
          f"{'acc@80 conf':>11s} {'s first':>8s} {'s conf':>8s} {'fwd/img first':>13s} "
          f"{'fwd/img conf':>12s}")
    for name in names:
        model = load_model(models_dir / f"{name}.ckpt")
        for row in args.rows:
            if row not in nodes:
                continue
            out = {"model": name, "attack": row}
            correct = {}
            for mode, kw in MODES.items():
                attack = build(nodes[row], f"eval.attacks.{row}", **kw)
                start = time.perf_counter()
                res = attack.run(model, x, y, need_success=False)
                seconds = time.perf_counter() - start
                with torch.no_grad():
                    logits = model(res.images)
                correct[mode] = logits.argmax(1) == y
                acc80 = accuracy_at_coverage(correct[mode], logits.amax(1))[0]
                out[mode] = {"seconds": round(seconds, 2), "acc_at_80": round(acc80, 4),
                             "accuracy": round(float(correct[mode].float().mean()), 4),
                             "forward_per_image": round(float(res.queries.float().mean()), 1)}
            if not torch.equal(correct["first"], correct["confident"]):
                raise SystemExit(f"{name}/{row}: the fooled images differ between the modes")
            rows.append(out)
            f, c = out["first"], out["confident"]
            print(f"{name:18s} {row:17s} {f['accuracy']:6.3f} {f['acc_at_80']:12.3f} "
                  f"{c['acc_at_80']:11.3f} {f['seconds']:8.1f} {c['seconds']:8.1f} "
                  f"{f['forward_per_image']:13.1f} {c['forward_per_image']:12.1f}")
    total = {m: round(sum(r[m]["seconds"] for r in rows), 1) for m in MODES}
    by_attack = {a: {m: round(sum(r[m]["seconds"] for r in rows if r["attack"] == a), 1)
                     for m in MODES} for a in args.rows}
    print(f"total seconds: first {total['first']}, confident {total['confident']}")
    for a, t in by_attack.items():
        ratio = t["confident"] / t["first"] if t["first"] else float("nan")
        print(f"  {a:17s} first {t['first']:7.1f} s  confident {t['confident']:7.1f} s  "
              f"x{ratio:.2f}")
    result = {"command": "python benchmarks/bench_select.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in (("models_dir", args.models_dir),
                                                              ("n", args.n))),
              "n": args.n, "models": names, "threads": torch.get_num_threads(),
              "machine": platform.platform(), "cpu_count": os.cpu_count(),
              "load_avg_before": list(os.getloadavg()), "rows": rows, "total_seconds": total,
              "seconds_by_attack": by_attack}
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, dest)


if __name__ == "__main__":
    main()
