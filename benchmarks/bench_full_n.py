"""The integrated model's white-box worst case on every test image, in shards of 2 cores each.

Measures what ``eval.full_n`` (issue 14 C) costs for ``stacker_adv_mean``: its white-box
headline rows (FGSM, PGD-40 x5, autoattack, both spatial presets, JSMA and sparse PGD at
k = 10 and 20), the goal rows on all n, the others on their ``eval.attack_n`` budget plus a
cascade over the images still robust, i.e. the white-box worst case on every image. The same
work as ``bench_eval.py --full-n-worst-case`` (the same overrides), run in process.

The n images are split into ``--shards`` interleaved parts; each runs in its own process with
``--threads`` threads, pinned to its own cores (``taskset``) when the machine has enough. Each
shard does the same per-image work as the whole run (its budgets are the same fractions of its
images), so the sum of the shards' wall times is the time on one ``--threads``-core process,
measured without waiting hours: on a machine with 16 idle cores, 8 shards of 2 cores.

    python benchmarks/bench_full_n.py --models-dir models/robust --shards 8 --threads 2
    python benchmarks/bench_full_n.py --models-dir models/robust --n 40 --shards 1  # smoke

Writes ``benchmarks/results/eval_full_n_sharded.json`` (``--out``): per shard wall time, load
averages, stage times, rows (n, correct, seconds) and the cascade's extra images; combined: the
summed wall time and the worst cases' accuracy on the union of the shards. Every row also keeps
the test-set indices of the digits it fooled (``fooled``) and, for a budgeted row, of the
digits it covered (``covered``), so a worst case with attacks run elsewhere on the same digits
can be formed (``check_l0_independent.py`` and ``check_linf_independent.py --worst-with``).

**The model-time floor.** Each shard counts the images its attacks pass through the goal model
(a forward hook on every attacked copy and on the predicting model): ``forward`` (no input
gradient) and ``gradient`` (forward with an input gradient, then its backward). The parent
times the same attacked copy on one thread, batch 256: forward images/s and forward+backward
images/s. ``floor_s`` = forward / forward rate + gradient / gradient rate: the seconds this
attack work would take if every pass ran at the model's own batched speed, with no attack
bookkeeping at all. Scaled to 1,986 images on 2 cores, it says whether a time goal is reachable
by faster attack code, or only by less work or a faster model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import GOAL_MODEL, full_n_overrides  # noqa: E402

if TYPE_CHECKING:
    import torch


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def whitebox_fooled(path: str, model: str, n_test: int, idx) -> torch.Tensor:
    """(len(idx),) bool: the white-box worst case of ``bench_full_n.py``'s JSON fooled the digit.

    The JSON must come from the same model on every test digit (its worst case covers all)."""
    bench = json.loads(Path(path).read_text())
    ran_on = {m for shard in bench.get("per_shard", []) for m in shard["full_n"]["models"]}
    if model not in ran_on:
        raise SystemExit(f"{path} is a run on {sorted(ran_on)}, not on {model!r}")
    row = bench["combined"].get("worst_case/whitebox")
    if row is None or "fooled" not in row:
        raise SystemExit(f"{path} has no per-image white-box worst case (rerun bench_full_n.py)")
    if row["n"] != n_test:
        raise SystemExit(f"{path} covers {row['n']} digits, not all {n_test} test digits")
    fooled = set(row["fooled"])
    import torch

    return torch.tensor([int(i) in fooled for i in idx], dtype=torch.bool)


def combine(shards: list[dict]) -> dict[str, dict]:
    """The shards' rows summed: n, correct, seconds, accuracy, ``fooled`` (test indices, merged)
    and ``covered`` (the test indices a row answers for; None when it covers every digit of every
    shard). Shards written before they kept their ``index`` leave ``covered`` out."""
    combined: dict[str, dict] = {}
    every = sum(s["n"] for s in shards)
    for s in shards:
        for key, r in s["rows"].items():
            c = combined.setdefault(key, {"n": 0, "correct": 0, "seconds": 0.0, "fooled": [],
                                          "covered": []})
            c["n"] += r["n"]
            c["correct"] += r["correct"]
            c["seconds"] += r["seconds"] or 0.0
            c["fooled"] = sorted(c["fooled"] + r.get("fooled", []))
            mine = r.get("covered") if r.get("covered") is not None else s.get("index")
            c["covered"] = None if mine is None or c["covered"] is None else c["covered"] + mine
    for c in combined.values():
        c["accuracy"] = round(c["correct"] / c["n"], 4) if c["n"] else None
        c["seconds"] = round(c["seconds"], 1)
        if c["covered"] is None:             # a shard without its index: unknown
            del c["covered"]
        elif len(c["covered"]) == every:
            c["covered"] = None
        else:
            c["covered"] = sorted(c["covered"])
    return combined


def per_image(cell, part) -> dict[str, list[int] | None]:
    """A cell's per-image outcome in test-set indices: ``fooled`` (the digits it broke) and
    ``covered`` (the digits it answers for; None = every digit of the shard)."""
    test = [int(part[p]) for p in cell.positions]
    fooled = [t for t, ok in zip(test, cell.correct.tolist(), strict=True) if not ok]
    return {"fooled": sorted(fooled), "covered": None if cell.n == len(part) else sorted(test)}


def forward_rate(models_dir: str, seconds: float = 10.0, batch: int = 1024,
                 name: str = GOAL_MODEL) -> float:
    """Plain forward passes per second of the goal model on one thread (batch 1,024 test
    digits): a calibration of how fast this machine is right now (load included)."""
    import torch

    from advdefense.data import load_mnist67
    from advdefense.registry import load_model, model_path

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model(model_path(models_dir, name))
        x = load_mnist67("test", root=str(ROOT / "data"))[0][:batch]
        done, start = 0, time.perf_counter()
        with torch.inference_mode():
            model(x)
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                model(x)
                done += batch
        return round(done / (time.perf_counter() - start), 1)
    finally:
        torch.set_num_threads(threads)


class PassCounter:
    """Counts images through a module: ``forward`` (no input gradient) and ``gradient``."""

    def __init__(self) -> None:
        self.forward = 0
        self.gradient = 0

    def hook(self, module: object, inputs: tuple, output: object) -> None:
        x = inputs[0] if inputs else None
        if not hasattr(x, "shape"):
            return
        import torch

        if torch.is_grad_enabled() and x.requires_grad:
            self.gradient += int(x.shape[0])
        else:
            self.forward += int(x.shape[0])


def count_passes(counter: PassCounter) -> None:
    """Hook ``counter`` onto every module the grid and the convergence runs attack."""
    import advdefense.evaluation.convergence as convergence
    import advdefense.evaluation.grid as grid
    from advdefense.evaluation import threats

    original = threats.attackable

    def counted(model, fast: bool = True):  # noqa: ANN001, ANN202
        module = original(model, fast)
        module.register_forward_hook(counter.hook)
        return module

    for mod in (threats, grid, convergence):
        mod.attackable = counted


def model_rates(models_dir: str, seconds: float = 8.0, batch: int = 256,
                name: str = GOAL_MODEL) -> dict[str, float]:
    """Images/s of the goal model's attacked copy on one thread: ``forward`` (no gradient) and
    ``gradient`` (forward + input-gradient backward), batch ``batch`` test digits."""
    import torch

    from advdefense.data import load_mnist67
    from advdefense.evaluation.threats import attackable
    from advdefense.registry import load_model, model_path

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = attackable(load_model(model_path(models_dir, name)))
        x = load_mnist67("test", root=str(ROOT / "data"))[0][:batch].contiguous(
            memory_format=torch.channels_last)

        def forward() -> None:
            with torch.no_grad():
                model(x)

        def gradient() -> None:
            xg = x.clone().requires_grad_(True)
            model(xg).logsumexp(1).sum().backward()

        out = {}
        for name, step in (("forward", forward), ("gradient", gradient)):
            step()
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                step()
                done += batch
            out[name] = round(done / (time.perf_counter() - start), 1)
        return out
    finally:
        torch.set_num_threads(threads)


def floor(passes: dict[str, int], rates: dict[str, float], n: int, threads: int) -> dict:
    """The model-time floor of ``passes`` (see the module docstring), per image and scaled to
    all 1,986 test images on ``threads`` cores (one single-thread shard per core)."""
    seconds = passes["forward"] / rates["forward"] + passes["gradient"] / rates["gradient"]
    per_image = seconds / max(n, 1)
    return {"passes_per_image": {k: round(v / max(n, 1), 1) for k, v in passes.items()},
            "floor_s": round(seconds, 1), "floor_s_per_image": round(per_image, 3),
            f"floor_min_1986_on_{threads}_cores": round(per_image * 1986 / threads / 60, 1)}


def worker(args: argparse.Namespace) -> None:
    """Evaluate shard ``args.shard`` and write its JSON to ``args.worker_out``."""
    import torch

    torch.set_num_threads(args.threads)
    from hydra import compose, initialize_config_dir

    from advdefense.cli.evaluate import attack_specs, load_models, time_budget
    from advdefense.data import load_mnist67
    from advdefense.evaluation.cache import CellCache
    from advdefense.evaluation.pipeline import evaluate_models
    from advdefense.evaluation.settings import EvalSettings, sanity_config
    from advdefense.sampling import stratified_sample

    tmp = Path(args.worker_out).parent
    os.environ.setdefault("ADVDEFENSE_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[
            f"paths.models_dir={args.models_dir}", f"paths.log_dir={tmp}", "eval.cache=false",
            "eval.progress=false", *full_n_overrides(args.model)])
    counter = PassCounter()
    count_passes(counter)
    images, labels = load_mnist67("test", root=str(ROOT / "data"))
    part = stratified_sample(labels, args.n, 0)[args.shard::args.shards]
    x, y = images[part], labels[part]
    load_before, start = _load(), time.perf_counter()
    specs = attack_specs(cfg)
    budget = time_budget(cfg, len(y), specs)
    settings = EvalSettings(tmp / f"out{args.shard}", CellCache(tmp / "cache", enabled=False),
                            ["whitebox"], None, None, sanity_config(cfg.eval.sanity),
                            dict(budget.attack_n), 0, False, {}, budget.full_n)
    models = load_models(cfg)
    for m in models:
        m.module.register_forward_hook(counter.hook)
    out = evaluate_models(models, specs, x, y, settings)
    wall = time.perf_counter() - start
    rows = {f"{r['attack']}/{r['threat']}": {"n": r["n"], "correct": round(r["accuracy"] * r["n"]),
                                             "seconds": r.get("seconds")}
            for r in out["rows"] if r["model"] == args.model}
    for cell in out["cells"]:
        if cell.model == args.model and f"{cell.attack}/{cell.threat}" in rows:
            rows[f"{cell.attack}/{cell.threat}"] |= per_image(cell, part)
    result = {"shard": args.shard, "n": len(y), "index": [int(i) for i in part],
              "wall_s": round(wall, 1),
              "threads": args.threads, "load_avg_before": load_before, "load_avg_after": _load(),
              "timings": out["meta"]["timings"], "full_n": out["meta"]["full_n"], "rows": rows,
              "passes": {"forward": counter.forward, "gradient": counter.gradient}}
    Path(args.worker_out).write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", required=True, help="a copy of the robust registry")
    ap.add_argument("--model", default=GOAL_MODEL, help="the integrated model's registry name")
    ap.add_argument("--n", type=int, default=None, help="test images (default: all 1,986)")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="threads (cores) per shard")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/eval_full_n_sharded.json"))
    ap.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.shard is not None:
        worker(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_full_n_"))
    cores = os.cpu_count() or 1
    pin = shutil.which("taskset") is not None and args.shards * args.threads <= cores
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    procs = []
    rate_before = forward_rate(args.models_dir, name=args.model)
    load_before, start = _load(), time.perf_counter()
    for i in range(args.shards):
        cmd = [sys.executable, __file__, "--models-dir", str(Path(args.models_dir).resolve()),
               "--model", args.model,
               "--shards", str(args.shards), "--threads", str(args.threads), "--shard", str(i),
               "--worker-out", str(tmp / f"shard{i}.json")]
        if args.n:
            cmd += ["--n", str(args.n)]
        if pin:
            first = i * args.threads
            cmd = ["taskset", "-c", f"{first}-{first + args.threads - 1}", *cmd]
        procs.append(subprocess.Popen(cmd, env=env, stderr=open(tmp / f"shard{i}.err", "w")))
    codes = [p.wait() for p in procs]
    shards = [json.loads((tmp / f"shard{i}.json").read_text())
              for i in range(args.shards) if (tmp / f"shard{i}.json").is_file()]
    combined = combine(shards)
    rates = model_rates(args.models_dir, name=args.model)
    n_done = sum(s["n"] for s in shards)
    passes = {k: sum(s.get("passes", {}).get(k, 0) for s in shards)
              for k in ("forward", "gradient")}
    model_floor = floor(passes, rates, n_done, 2) | {"model_img_per_s_1thread": rates}
    sum_wall = sum(s["wall_s"] for s in shards)
    model_floor["share_of_wall"] = round(model_floor["floor_s"] / sum_wall, 3) if sum_wall else None
    model_floor["wall_min_1986_on_2_cores"] = round(sum_wall / max(n_done, 1) * 1986 / 2 / 60, 1)
    out = {"command": " ".join(sys.argv), "machine": platform.platform(), "cpu_count": cores,
           "pinned": pin, "shards": args.shards, "threads_per_shard": args.threads,
           "models_dir": str(args.models_dir), "returncodes": codes,
           "wall_s": round(time.perf_counter() - start, 1),
           "sum_shard_wall_s": round(sum(s["wall_s"] for s in shards), 1),
           "max_shard_wall_s": max((s["wall_s"] for s in shards), default=None),
           "load_avg_before": load_before, "load_avg_after": _load(),
           "forward_img_per_s_1thread": {"before": rate_before,
                                         "after": forward_rate(args.models_dir, name=args.model)},
           "combined": combined, "model_floor": model_floor, "per_shard": shards,
           "stderr_tail": {i: (tmp / f"shard{i}.err").read_text()[-1500:]
                           for i, c in enumerate(codes) if c}}
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("wall_s", "sum_shard_wall_s", "max_shard_wall_s",
                                          "returncodes", "load_avg_before",
                                          "forward_img_per_s_1thread", "model_floor")}))
    for key, c in sorted(combined.items()):
        print(f"  {key:32s} n={c['n']:5d} acc={c['accuracy']}  {c['seconds']:9.1f} s")
    for i, err in out["stderr_tail"].items():
        print(f"shard {i} failed:\n{err}", file=sys.stderr)


if __name__ == "__main__":
    main()
