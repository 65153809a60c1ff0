"""Time the evaluation grid and write JSON: ``python benchmarks/bench_eval.py [--n 200]``.

Runs ``evaluate.py`` on a registry (``--models-dir``, default ``models/``) with the disk cache
off, then prints where the time went: by stage (grid, sweeps, report) and by attack x threat
(summed over models), from the run's ``results.json``. ``--synthetic`` (or a registry without
models) builds a throwaway registry with the same architectures (six members, the surrogate and
stacker/vote/mean, untrained weights); untrained models break at different rates than trained
ones and early stop makes the cost depend on that, so synthetic timings are indicative only.
Extra Hydra overrides may follow ``--``. Writes ``benchmarks/results/eval.json`` (``--out``).

    python benchmarks/bench_eval.py --n 200                           # quick mode, models/
    python benchmarks/bench_eval.py --models-dir models/quick --n 200 -- \\
        'eval.models=[none-none,none-fgsm,stacker]'
    python benchmarks/bench_eval.py --full-n-worst-case --models-dir <copy of models/robust> \\
        --threads 2

``--full-n-worst-case`` times what ``experiment=robust`` adds for its goal model
(``eval.full_n``): the white-box headline rows of ``stacker_adv_mean`` (the goal rows on all n,
the others on their budget plus a cascade over the images still robust), i.e. the white-box
worst case on every test image, and nothing else (no other model, threat, sweep, certificate or
convergence run). Writes ``benchmarks/results/eval_full_n.json``: stage times, each row's
seconds and n, the cascade's extra images per row, the worst cases, load averages before/after.
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
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRE = {"none": {"_target_": "advdefense.preprocess.Identity"},
       "blur": {"_target_": "advdefense.preprocess.GaussianBlur"},
       "squeeze": {"_target_": "advdefense.preprocess.FeatureSqueeze"}}
NET = {"_target_": "advdefense.nets.SmallCNN"}
PAPER_MODELS = ["none-none", "none-fgsm", "blur-fgsm", "squeeze-fgsm", "none-blackbox",
                "blur-blackbox", "squeeze-blackbox", "stacker", "vote", "mean"]


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


# the white-box rows of the robust worst case (L-inf, spatial, L0 k <= 20): conf/evaluate.yaml
FULL_N_ROWS = ["fgsm", "pgd", "autoattack", "spatial_engstrom", "spatial_uae", "jsma_k10",
               "jsma_k20", "sparse_pgd_k10", "sparse_pgd_k20"]
GOAL_MODEL = "stacker_adv_mean"


def synthetic_robust_registry(models_dir: Path) -> None:
    """``stacker_adv_mean``'s architecture with untrained weights: the wide and the squeezed
    SmallCNN and a skip=mean stacker head (an untrained model breaks at once: indicative only)."""
    import torch

    from advdefense.registry import build_from_spec, save_model

    torch.manual_seed(0)
    wide = {"_target_": "advdefense.nets.SmallCNN", "channels": [32, 64], "hidden": 256}
    members = {"none-pgd_spatial_uae_l0k30_wide": {"preprocess": PRE["none"], "net": wide},
               "squeeze-pgd_spatial_uae_l0k30": {"preprocess": PRE["squeeze"], "net": NET}}
    head = {"_target_": "advdefense.nets.StackerMLP", "in_features": 4, "skip": "mean"}
    spec = {"combine": "mlp", "members": members, "head": head}
    save_model(models_dir / f"{GOAL_MODEL}.ckpt", build_from_spec("ensemble", spec), "ensemble",
               GOAL_MODEL, spec)


def full_n_overrides(model: str = GOAL_MODEL) -> list[str]:
    """evaluate.py overrides of ``--full-n-worst-case`` (see the module docstring); ``model``:
    the registry name of the integrated model to treat as the goal model."""
    return ["eval.experiment=robust", f"eval.models=[{model}]", f"eval.full_n.models=[{model}]",
            "eval.threats=[whitebox]",
            f"eval.only_attacks=[{','.join(FULL_N_ROWS)}]", "eval.attacks.pgd.restarts=5",
            "eval.sweep.enabled=false", "eval.certify.enabled=false",
            "eval.sanity.convergence_n=0", "eval.device=cpu"]


def full_n_summary(results: dict) -> dict:
    """Rows and worst cases of the goal model, from results.json; the cascade (extra images per
    completed row) is in ``full_n`` (results.json meta)."""
    meta, rows = results.get("meta", {}), results.get("rows", [])
    return {"full_n": meta.get("full_n"), "attack_n": meta.get("attack_n"),
            "rows": {f"{r['attack']}/{r['threat']}": {
                "n": r["n"], "accuracy": round(r["accuracy"], 4), "seconds": r.get("seconds")}
                for r in rows if r["model"] == GOAL_MODEL}}


def breakdown(results: dict) -> dict:
    """Seconds by stage and by (attack, threat) summed over models, from results.json."""
    meta, rows = results.get("meta", {}), results.get("rows", [])
    cells: dict[str, float] = defaultdict(float)
    n_by: dict[str, int] = {}
    for r in rows:
        if r["attack"] == "worst_case":
            continue
        key = f"{r['attack']}/{r['threat']}"
        cells[key] += float(r.get("seconds") or 0.0)
        n_by[key] = r["n"]
    return {"stages": meta.get("timings", {}), "cells": {k: round(v, 2) for k, v in cells.items()},
            "cell_n": n_by, "pipeline_seconds": meta.get("seconds")}


def print_table(out: dict) -> None:
    b = out.get("breakdown") or {}
    print(f"\nevaluate.py: {out['seconds']:.1f} s wall (n={out['n']}, "
          f"threads={out['threads']}, {len(out['models'])} models, rc={out['returncode']})")
    for stage, s in (b.get("stages") or {}).items():
        print(f"  stage {stage:28s} {s:9.1f} s")
    print(f"  {'attack/threat (sum over models)':34s} {'n':>5s} {'seconds':>9s}")
    for key, s in sorted((b.get("cells") or {}).items(), key=lambda kv: -kv[1]):
        print(f"  {key:34s} {b['cell_n'].get(key, 0):5d} {s:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="test images (default: all 1,986)")
    ap.add_argument("--models-dir", default=str(ROOT / "models"),
                    help="registry to evaluate (default: models/)")
    ap.add_argument("--all-models", action="store_true",
                    help="every registry entry (default: the paper's ten that are present)")
    ap.add_argument("--synthetic", action="store_true", help="untrained throwaway registry")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/torch threads of the evaluate.py process (default: inherited)")
    ap.add_argument("--full-n-worst-case", action="store_true",
                    help=f"only {GOAL_MODEL}'s white-box worst case on all n (eval.full_n)")
    ap.add_argument("--out", default=None,
                    help="JSON (default: results/eval.json, results/eval_full_n.json)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for evaluate.py")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    models_dir = Path(args.models_dir).resolve()
    synthetic = args.synthetic or not any(models_dir.glob("*.ckpt"))
    full_n = args.full_n_worst_case
    if synthetic:
        models_dir = tmp / "models"
        (synthetic_robust_registry if full_n else synthetic_registry)(models_dir)
    from advdefense.registry import list_models

    present = list_models(models_dir)  # not the replaced <name>.prev.ckpt files
    models = present if args.all_models else [m for m in PAPER_MODELS if m in present]
    if full_n:
        models = [GOAL_MODEL]
    cmd = [sys.executable, str(ROOT / "evaluate.py"), f"paths.models_dir={models_dir}",
           f"paths.log_dir={tmp}/logs", "eval.cache=false", "eval.progress=false",
           f"eval.n={args.n if args.n else 'null'}",
           *(full_n_overrides() if full_n else [f"eval.models=[{','.join(models)}]"]),
           *args.overrides]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    load_before = _load()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    found = sorted(tmp.glob("logs/**/results.json"))
    results = json.loads(found[-1].read_text()) if found else {}
    out = {"command": " ".join(cmd), "seconds": round(seconds, 1), "returncode": proc.returncode,
           "n": args.n or 1986, "synthetic": synthetic, "models_dir": str(models_dir),
           "models": models, "threads": env.get("OMP_NUM_THREADS", "default"),
           "cpu_count": os.cpu_count(), "machine": platform.platform(),
           "load_avg_before": load_before, "load_avg_after": _load(),
           "breakdown": breakdown(results) if results else None,
           **({"full_n_worst_case": full_n_summary(results) if results else None}
              if full_n else {}),
           "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}
    dest = Path(args.out or ROOT / "benchmarks" / "results" /
                ("eval_full_n.json" if full_n else "eval.json"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(dest.read_text()) if dest.is_file() else {}
    runs = previous.get("runs", []) if isinstance(previous, dict) else []
    runs = [r for r in runs if r.get("n") != out["n"] or r.get("models_dir") != out["models_dir"]]
    tmp_dest = dest.with_suffix(".json.tmp")
    tmp_dest.write_text(json.dumps({"runs": [*runs, out]}, indent=1))
    os.replace(tmp_dest, dest)
    print_table(out)
    if proc.returncode:
        print(out["stderr_tail"], file=sys.stderr)
    sys.exit(proc.returncode)


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    main()
