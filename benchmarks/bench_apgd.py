"""APGD speed and strength next to torchattacks' APGD, same model, images and settings.

The model is the undefended SmallCNN of ``bench_attacks.py`` (same training), the images the
same seeded test digits. Each eps is run by:

* ``ours``: ``APGD(eps, steps=100, restarts=1, loss="ce")`` as the evaluation runs it
  (``early_stop=True``: fooled examples leave the batch), on the model the evaluation's
  attacks get (``evaluation.threats.attackable``: the fast path of
  :func:`advdefense.fastpath.optimize`); torchattacks gets the trained model itself;
* ``ours_full``: the same with ``early_stop=False`` (every example runs all 100 steps, the
  work torchattacks does);
* ``torchattacks``: ``torchattacks.APGD(model, eps=eps, steps=100, n_restarts=1, loss="ce")``
  (a benchmark-only extra: ``pip install --no-deps torchattacks==3.5.1``).

Timing as in ``bench_attacks.py``: a 2-image warm-up, then the median of up to ``--repeats``
runs (fewer once ``--max-seconds`` is spent). eps 0.3 is the grid's setting (the CNN falls to
near 0, early stop matters); eps 0.15 leaves accuracy mid-range, where most examples run
every step.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_apgd.py --n 128

Writes a table to stdout and JSON to ``benchmarks/results/apgd.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_attacks import measure, train  # noqa: E402

from advdefense.attacks import APGD  # noqa: E402
from advdefense.attacks.base import predict  # noqa: E402
from advdefense.data import load_mnist67  # noqa: E402
from advdefense.evaluation.threats import attackable  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=128, help="test images")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.3, 0.15])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per attack (median)")
    parser.add_argument("--max-seconds", type=float, default=3.0,
                        help="stop repeating an attack once this much time is spent")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "apgd.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = train(2, 4000)
    images, labels = load_mnist67("test")
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:args.n]
    x, y = images[idx].contiguous(), labels[idx].contiguous()
    try:
        import torchattacks as ta
    except ImportError as err:
        ta = None
        print(f"torchattacks not importable ({err}); skipped")
    results: dict[str, dict] = {"clean": {
        "n": args.n, "accuracy": round(100 * (predict(model, x) == y).float().mean().item(), 2)}}
    target = attackable(model)  # what the evaluation's attacks get
    load = [os.getloadavg()]
    for eps in args.eps:
        runs = {
            "ours": lambda a, b, e=eps: APGD(eps=e, steps=args.steps)(target, a, b),
            "ours_full": lambda a, b, e=eps: APGD(eps=e, steps=args.steps,
                                                  early_stop=False)(target, a, b),
        }
        if ta is not None:
            runs["torchattacks"] = lambda a, b, e=eps: ta.APGD(
                model, eps=e, steps=args.steps, n_restarts=1, loss="ce")(a, b)
        for lib, run in runs.items():
            key = f"apgd{args.steps}_eps{eps:g}/{lib}"
            results[key] = measure(run, x, y, model, args.repeats, args.max_seconds)
            print(f"{key:28s} {results[key]}", flush=True)
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, "torch": torch.__version__, "repeats": args.repeats,
            "max_seconds": args.max_seconds, "cpu_count": os.cpu_count(),
            "loadavg_start_end": load + [os.getloadavg()],
            "command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "unset")
            + " python benchmarks/bench_apgd.py " + " ".join(sys.argv[1:])}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")


def print_table(results: dict[str, dict]) -> None:
    print(f"\nclean accuracy {results['clean']['accuracy']:.2f}% on {results['clean']['n']}")
    print(f"{'attack':18s} {'library':13s} {'n':>5s} {'runs':>4s} {'img/s':>9s} {'acc %':>7s} "
          f"{'ours/it':>8s} {'full/it':>8s}")
    for key, r in results.items():
        if key == "clean":
            continue
        attack, lib = key.split("/")
        ratios = ["" if lib == mine else
                  f"{results[f'{attack}/{mine}']['images_per_s'] / r['images_per_s']:.2f}x"
                  for mine in ("ours", "ours_full")]
        print(f"{attack:18s} {lib:13s} {r['n']:5d} {r['runs']:4d} {r['images_per_s']:9.2f} "
              f"{r['accuracy']:7.2f} {ratios[0]:>8s} {ratios[1]:>8s}")


if __name__ == "__main__":
    main()
