"""Time the evaluation grid and write JSON: ``python benchmarks/bench_eval.py [--n 200]``.

Uses the real registry (``models/``) when it has models; ``--synthetic`` builds a throwaway
registry with the same architectures (six members + stacker/vote/mean, untrained weights) so
the cost can be measured before training. Untrained models break at different rates than
trained ones, so synthetic timings are indicative only. Extra Hydra overrides may follow
``--``. Writes ``benchmarks/results/bench_eval_n<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRE = {"none": {"_target_": "advdefense.preprocess.Identity"},
       "blur": {"_target_": "advdefense.preprocess.GaussianBlur"},
       "squeeze": {"_target_": "advdefense.preprocess.FeatureSqueeze"}}
NET = {"_target_": "advdefense.nets.SmallCNN"}


def synthetic_registry(models_dir: Path) -> None:
    """Six members, the surrogate and three ensembles with untrained weights."""
    import torch

    from advdefense.registry import build_from_spec, save_model

    torch.manual_seed(0)
    members = {}
    for pre in ("none", "blur", "squeeze"):
        for defense in ("none", "fgsm", "blackbox"):
            name, spec = f"{pre}-{defense}", {"preprocess": PRE[pre], "net": NET}
            save_model(models_dir / f"{name}.ckpt", build_from_spec("member", spec), "member",
                       name, spec)
            if defense != "none":
                members[name] = spec
    head = {"_target_": "advdefense.nets.StackerMLP", "in_features": 2 * len(members)}
    for name, combine in (("stacker", "mlp"), ("vote", "vote"), ("mean", "mean")):
        spec = {"combine": combine, "members": members, "head": head if combine == "mlp" else None}
        save_model(models_dir / f"{name}.ckpt", build_from_spec("ensemble", spec), "ensemble",
                   name, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=None, help="test images (default: all 1,986)")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    models_dir = ROOT / "models"
    if args.synthetic or not any(models_dir.glob("*.ckpt")):
        models_dir = tmp / "models"
        synthetic_registry(models_dir)
    cmd = [sys.executable, str(ROOT / "evaluate.py"), f"paths.models_dir={models_dir}",
           f"paths.log_dir={tmp}/logs", "eval.cache=false", "eval.progress=false",
           f"eval.n={args.n if args.n else 'null'}", *args.overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = {"command": " ".join(cmd), "seconds": round(seconds, 1), "returncode": proc.returncode,
           "n": args.n or 1986, "synthetic": models_dir != ROOT / "models",
           "models": sorted(p.stem for p in models_dir.glob("*.ckpt")),
           "cpu_count": os.cpu_count(), "torch_threads": _threads(), "machine": platform.platform(),
           "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}
    dest = ROOT / "benchmarks" / "results" / f"bench_eval_n{out['n']}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "stderr_tail"}, indent=1))
    sys.exit(proc.returncode)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
