"""Time a whole experiment stage by stage and write JSON.

    python benchmarks/bench_experiment.py paper            # experiment=paper, fresh registry
    python benchmarks/bench_experiment.py robust -- trainer=gpu
    python benchmarks/bench_experiment.py paper --from-run logs/paper/runs/<time>_paper

Runs ``train.py experiment=<name>`` in a fresh temporary registry and log folder (so nothing is
skipped and the evaluation cache starts empty), then reads the run's ``experiment.json`` (seconds
per member, per ensemble and for the evaluation) and ``evaluation/results.json`` (grid and sweep
seconds). ``--from-run`` records a run that already finished (e.g. the README's main job) instead
of starting one; the JSON says which. Writes ``benchmarks/results/experiment_<name>.json``.
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


def stages(run_dir: Path) -> dict:
    """Stage timings of a finished experiment run folder (``experiment.json`` + evaluation)."""
    exp = json.loads((run_dir / "experiment.json").read_text())
    timings = exp["timings"]
    out = {"stages": timings,
           "train_members_s": round(sum(t["seconds"] for t in timings
                                        if t["stage"].startswith("member ")), 1),
           "train_ensembles_s": round(sum(t["seconds"] for t in timings
                                          if t["stage"].startswith("ensemble ")), 1),
           "evaluation_s": next((t["seconds"] for t in timings if t["stage"] == "evaluation"),
                                None)}
    results = run_dir / "evaluation" / "results.json"
    if results.is_file():
        meta = json.loads(results.read_text()).get("meta", {})
        out["evaluation"] = {"n": meta.get("n"), "models": meta.get("models"),
                             "attack_n": meta.get("attack_n"), "timings": meta.get("timings"),
                             "cache_hits": meta.get("cache_hits")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", help="conf/experiment/<name>.yaml")
    ap.add_argument("--from-run", type=Path, help="a finished run folder to record instead")
    ap.add_argument("--out", type=Path, help="JSON path (default results/experiment_<name>.json)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for train.py")
    args = ap.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"experiment_{args.experiment}.json"
    record = {"experiment": args.experiment, "machine": platform.platform(),
              "cpu_count": os.cpu_count()}
    if args.from_run is not None:
        run_dir = args.from_run.resolve()
        if not (run_dir / "experiment.json").is_file():
            sys.exit(f"{run_dir} has no experiment.json: not a finished experiment run folder")
        record |= {"source": f"recorded finished run {run_dir}", "wall_s": None}
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench_{args.experiment}_"))
        load = list(os.getloadavg())
        cmd = [sys.executable, str(ROOT / "train.py"), f"experiment={args.experiment}",
               f"paths.models_dir={tmp}/models", f"paths.log_dir={tmp}/logs", *args.overrides]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = round(time.perf_counter() - start, 1)
        if proc.returncode != 0:
            sys.exit(f"train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        runs = sorted((tmp / "logs").glob("*/runs/*"), key=lambda p: p.stat().st_mtime)
        run_dir = runs[-1]
        record |= {"source": "fresh run", "command": " ".join(cmd[1:]), "wall_s": wall,
                   "load_avg_before": load}
    record |= stages(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(record, indent=2))
    os.replace(tmp_out, out)
    print(f"{args.experiment}: members {record['train_members_s']} s, ensembles "
          f"{record['train_ensembles_s']} s, evaluation {record['evaluation_s']} s, wall "
          f"{record['wall_s']} s -> {out}")


if __name__ == "__main__":
    main()
