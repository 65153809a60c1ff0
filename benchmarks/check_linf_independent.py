"""Our AutoAttack row next to another library's L-inf attacks, same model and images.

"A number is only as strong as the strongest attack tried on the same images": this runs our
``autoattack`` row (``conf/attack/autoattack.yaml``: APGD-CE, then APGD-margin on what survives)
and torchattacks' APGD-CE and PGD (code nobody here wrote) on one registered model and the same
stratified test digits, and reports each accuracy, the per-image worst over all of them, and
how far the other library lands below ours (the issue's bar: no more than 0.01). The JSON keeps
each digit's outcome per attack (``images``). With ``--worst-with`` (``bench_full_n.py``'s JSON
of the same model on every test digit) it also joins them to the evaluation's white-box worst
case: the worst case over both, and the digits only the other library broke that the
evaluation's attacks (straight-through *and* surrogate variants, every threat) also missed.

Usage::

    python benchmarks/check_linf_independent.py --models-dir models/robust \\
        --model stacker_adv_mean --n 200

Needs torchattacks (``.ci/setup`` installs it). Writes a table to stdout and JSON to
``benchmarks/results/linf_independent.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models" / "robust")
    parser.add_argument("--model", default="stacker_adv_mean")
    parser.add_argument("--n", type=int, default=200, help="stratified test digits (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worst-with", default=None,
                        help="bench_full_n.py JSON of the same model on all test digits: join "
                             "its white-box worst case")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "linf_independent.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import torchattacks as ta
    from bench_full_n import whitebox_fooled
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from advdefense.data import load_mnist67
    from advdefense.io import atomic_write_text
    from advdefense.registry import load_model
    from advdefense.sampling import stratified_sample

    model = load_model(args.models_dir / f"{args.model}.ckpt")
    images, labels = load_mnist67("test")
    idx = stratified_sample(labels, args.n, args.seed)
    whitebox = (whitebox_fooled(args.worst_with, args.model, len(labels), idx)
                if args.worst_with else None)   # refuses a wrong JSON before any attack runs
    x, y = images[idx], labels[idx]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        node = compose("evaluate").eval.attacks.autoattack
    ours = instantiate(node, eps=args.eps)

    def correct(adv: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(adv).argmax(1) == y

    runs: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    attacks = {
        "ours: autoattack (APGD-CE 100, then APGD-margin 100)": lambda: ours(model, x, y),
        "torchattacks APGD-CE, 100 steps, 1 restart": lambda: ta.APGD(
            model, norm="Linf", eps=args.eps, steps=100, n_restarts=1, loss="ce",
            seed=args.seed)(x, y),
        "torchattacks PGD-100, step 0.01, random start": lambda: ta.PGD(
            model, eps=args.eps, alpha=0.01, steps=100, random_start=True)(x, y),
    }
    for name, run in attacks.items():
        start = time.perf_counter()
        adv = run()
        seconds[name] = round(time.perf_counter() - start, 1)
        assert (adv - x).abs().max() <= args.eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        runs[name] = correct(adv)
        print(f"{name:55s} {runs[name].float().mean():.4f}  ({seconds[name]} s)", flush=True)
    worst = torch.stack(list(runs.values())).all(0)
    ours_name = next(iter(runs))
    others = [k for k in runs if k != ours_name]
    theirs = torch.stack([runs[k] for k in others]).all(0)
    result = {
        "model": args.model, "models_dir": str(args.models_dir), "n": len(idx), "seed": args.seed,
        "eps": args.eps, "threads": args.threads, "machine": platform.platform(),
        "load_avg": os.getloadavg(),
        "accuracy": {k: round(v.float().mean().item(), 4) for k, v in runs.items()},
        "seconds": seconds,
        "per_image_worst": round(worst.float().mean().item(), 4),
        "other_library_worst": round(theirs.float().mean().item(), 4),
        "other_library_below_ours": round(runs[ours_name].float().mean().item()
                                          - theirs.float().mean().item(), 4),
        "images_only_other_library_broke": int((runs[ours_name] & ~theirs).sum()),
        "images": {"index": [int(i) for i in idx], "label": y.tolist(),
                   "fooled": {k: (~v).tolist() for k, v in runs.items()}},
    }
    if whitebox is not None:
        result["with_whitebox"] = {
            "source": args.worst_with,
            "whitebox_alone": round(1 - whitebox.float().mean().item(), 4),
            "per_image_worst": round((worst & ~whitebox).float().mean().item(), 4),
            "images_only_other_library_broke": int((~theirs & runs[ours_name] & ~whitebox).sum())}
        result["images"]["fooled"]["whitebox_worst"] = whitebox.tolist()
    print(json.dumps({k: result[k] for k in ("per_image_worst", "other_library_worst",
                                             "other_library_below_ours",
                                             "images_only_other_library_broke")}
                     | ({"with_whitebox": result["with_whitebox"]} if whitebox is not None else {})))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
