"""Independent check of the k = 20 query-only L0 figure with attacks nobody here wrote.

Runs our Sparse-RS (k = 20, 10,000 queries) and torchattacks' query-based L0 attacks (``Pixle``,
Pujol et al. 2022, and ``OnePixel(pixels=k)``, Su et al. 2019; torchattacks 3.5.1, unmodified) on
the same stratified test digits of one model, and reports each accuracy and the per-image worst
case (a digit counts as robust only if every attack failed on it). The JSON keeps the per-image
outcomes (``images``: test-set index, label, and which attacks fooled each digit). With
``--worst-with`` (the JSON of ``bench_full_n.py`` on all test digits of the same model), it also
reports the worst case over these attacks *and* the white-box worst case on the same digits.
``--merge <an earlier JSON of this script> --worst-with <bench_full_n JSON>`` forms that worst
case from the earlier run's per-image outcomes without running any attack again.

All 1,986 digits on a few cores: ``--skip-done <earlier JSONs>`` leaves out the digits those runs
covered and ``--shard I/N`` keeps every N-th of the rest; run one process per shard, then
``--merge <JSONs>`` joins runs of the same model and settings on disjoint digits into one JSON
(rows recomputed from the per-image outcomes; seconds summed; ``--worst-with`` applies).
``--below 500`` keeps only the first 500 test digits, where the failures concentrate: a cheap
screen of a new model that a later ``--skip-done`` run completes to all 1,986.

The pixel budget for the torchattacks attacks: they query the model through an oracle that
projects every queried image onto the k-pixel L0 ball around the original (keep the k largest
changes, :func:`advdefense.attacks.sparse_pgd.project_l0`), so every query they make is a valid
k-pixel image; their outputs are projected the same way and then judged on the *bare* model,
and the changed pixels of every judged image are counted (the script fails if one exceeds k).
OnePixel with ``pixels=k`` changes at most k pixels by construction; Pixle moves patches of
pixels and would exceed k without the projection. Raw (unprojected) L0 counts are reported too.

    # a registry model (e.g. the robust experiment's integrated model)
    python benchmarks/check_l0_independent.py --models-dir models/robust \\
        --model stacker_adv_mean --n 100
    # the worst case with a white-box run, from an earlier run's outcomes (no attack rerun)
    python benchmarks/check_l0_independent.py --merge benchmarks/results/sparse_rs.json \\
        --worst-with benchmarks/results/eval_full_n.json --out /tmp/joined.json
    # every test digit: the 1,586 outside an earlier n=400 run, in two processes, then one JSON
    python benchmarks/check_l0_independent.py --models-dir models/robust --model stacker_adv_mean \\
        --n 1986 --attacks --skip-done n400.json --shard 0/2 --out part0.json   # and 1/2
    python benchmarks/check_l0_independent.py --merge n400.json part0.json part1.json \\
        --worst-with eval_full_n.json --out all.json
    # a member state dict written by bench_l0_training.py --save-dir
    python benchmarks/check_l0_independent.py --state-dict /tmp/m/pgd_spatial_uae.pt --n 100

Writes JSON (default ``benchmarks/results/l0_independent.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torchattacks  # noqa: E402
from bench_full_n import whitebox_fooled  # noqa: E402

from advdefense.attacks import SparseRS  # noqa: E402
from advdefense.attacks.sparse_pgd import project_l0  # noqa: E402
from advdefense.data import load_mnist67  # noqa: E402
from advdefense.io import atomic_write_text  # noqa: E402
from advdefense.registry import load_model, model_path  # noqa: E402
from advdefense.sampling import stratified_sample  # noqa: E402


class L0Oracle(nn.Module):
    """The model seen through the k-pixel budget: every query is projected around ``origin``.

    Shape: (M, 1, 28, 28) in [0, 1] -> (M, 2) logits; ``origin`` is one (1, 1, 28, 28) image.
    Counts the images queried in ``queries``.
    """

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k
        self.origin: torch.Tensor | None = None
        self.queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the projected queries."""
        if self.origin is None:
            raise RuntimeError("L0Oracle.origin is not set")
        self.queries += x.shape[0]
        return self.model(project_l0(self.origin.expand_as(x), x.clamp(0, 1), self.k))


def make_attack(name: str, oracle: nn.Module, args: argparse.Namespace):
    """A torchattacks attack on the oracle."""
    if name == "pixle":
        return torchattacks.Pixle(oracle, x_dimensions=(1, args.pixle_patch),
                                  y_dimensions=(1, args.pixle_patch),
                                  restarts=args.pixle_restarts,
                                  max_iterations=args.pixle_iterations)
    if name == "onepixel":
        return torchattacks.OnePixel(oracle, pixels=args.k, steps=args.onepixel_steps,
                                     popsize=args.onepixel_popsize, inf_batch=512)
    raise SystemExit(f"unknown attack {name!r}")


@torch.no_grad()
def run_torchattack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    args: argparse.Namespace) -> dict:
    """One image at a time (the oracle's origin is per image); returns the row with per-image
    fooled flags, projected and raw L0 counts and queries."""
    oracle = L0Oracle(model, args.k).eval()
    attack = make_attack(name, oracle, args)
    fooled, l0, raw_l0, queries, errors = [], [], [], [], 0
    start = time.perf_counter()
    for i in range(len(y)):
        np.random.seed(args.seed + i)  # both attacks draw from numpy's global generator
        xi, yi = x[i:i + 1], y[i:i + 1]
        oracle.origin, oracle.queries = xi, 0
        if bool(model(xi).argmax(1) != yi):  # misclassified already: no attack needed
            adv = xi
        else:
            try:
                adv = attack(xi, yi).detach()
            except (IndexError, ValueError) as err:  # count as not fooled, but say so
                print(f"  {name} image {i}: {type(err).__name__}: {err}", flush=True)
                adv, errors = xi, errors + 1
        raw_l0.append(int((adv != xi).sum()))
        proj = project_l0(xi, adv.clamp(0, 1), args.k)
        n_changed = int((proj != xi).sum())
        if n_changed > args.k:
            raise AssertionError(f"{name}: image {i} has {n_changed} > {args.k} changed pixels")
        l0.append(n_changed)
        fooled.append(bool(model(proj).argmax(1) != yi))
        queries.append(oracle.queries)
        if args.progress and (i + 1) % 10 == 0:
            print(f"  {name}: {i + 1}/{len(y)} fooled {sum(fooled)} "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    f = torch.tensor(fooled)
    return {"attack": f"torchattacks.{name}", "accuracy": round(1 - float(f.float().mean()), 4),
            "seconds": round(time.perf_counter() - start, 1), "errors": errors,
            "max_l0": max(l0), "max_raw_l0": max(raw_l0),
            "raw_over_k": sum(r > args.k for r in raw_l0),
            "mean_queries": round(float(np.mean(queries)), 1), "fooled": f}


def with_whitebox(worst: torch.Tensor, whitebox: torch.Tensor, source: str) -> dict:
    """The row of the per-image worst case over ``worst`` (query-only, (n,) bool: fooled) and the
    white-box worst case ``whitebox`` ((n,) bool) from the JSON ``source``."""
    return {"attack": f"per-image worst case with the white-box worst case ({source})",
            "accuracy": round(1 - float((worst | whitebox).float().mean()), 4),
            "whitebox_alone": round(1 - float(whitebox.float().mean()), 4)}


def _settings(run: dict) -> dict:
    """What runs joined by --merge must share: model, k, queries, the attack seed and the
    attacks run (the merged JSON keeps one ``args``, so it must be true of every part)."""
    return {"model": run["model"], "k": run["k"], "queries": run["args"]["queries"],
            "seed": run["args"].get("seed", 0),
            "attacks": sorted(set(run["images"]["fooled"]) - {"whitebox_worst"})}


def _same_settings(runs: list[dict], paths: list[str]) -> None:
    for run, path in zip(runs, paths, strict=True):
        if not run.get("complete") or "images" not in run:
            raise SystemExit(f"{path} is not a complete run of this script with per-image "
                             "outcomes; rerun it")
        if _settings(run) != _settings(runs[0]):
            raise SystemExit(f"{path} was run with {_settings(run)}, {paths[0]} with "
                             f"{_settings(runs[0])}: --merge joins runs of one model and settings")


def _merged_row(rows: list[dict], fooled: torch.Tensor, counts: list[int]) -> dict:
    """One row from the same row of several runs: accuracy from the joined outcomes ``fooled``
    ((n,) bool), ``max_*`` the largest, ``mean_*`` weighted by each run's ``counts``, other
    numbers summed."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if key == "accuracy" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        values = [r[key] for r in rows]
        if key.startswith("max_"):
            out[key] = max(values)
        elif key.startswith("mean_"):
            out[key] = round(sum(v * c for v, c in zip(values, counts, strict=True))
                             / sum(counts), 1)
        else:
            out[key] = round(sum(values), 1) if isinstance(value, float) else sum(values)
    out["accuracy"] = round(1 - float(fooled.float().mean()), 4)
    return out


def merge(args: argparse.Namespace, command: str) -> None:
    """Join complete runs of this script on disjoint digits (``args.merge``; one run is fine)
    into one JSON, with the white-box worst case of ``args.worst_with`` if given."""
    runs = [json.loads(Path(path).read_text()) for path in args.merge]
    _same_settings(runs, args.merge)
    if args.model and args.model != runs[0]["model"]:
        raise SystemExit(f"{args.merge[0]} is a run on {runs[0]['model']!r}, not on {args.model!r}")
    index = [i for run in runs for i in run["images"]["index"]]
    if len(set(index)) != len(index):
        raise SystemExit("the runs to --merge share digits; give runs on disjoint digits "
                         "(--skip-done, --shard)")
    keys = [a for a in runs[0]["images"]["fooled"] if a != "whitebox_worst"]
    fooled = {a: torch.tensor([f for run in runs for f in run["images"]["fooled"][a]],
                              dtype=torch.bool) for a in keys}
    counts = [run["n"] for run in runs]
    by_row = {"clean": "clean", "ours": "sparse_rs"}
    rows = []
    for j, row in enumerate(runs[0]["rows"]):
        if row["attack"].startswith("per-image worst case"):
            continue
        name = row["attack"].split(":")[0].removeprefix("torchattacks.")
        parts = [run["rows"][j] for run in runs]
        if any(r["attack"] != row["attack"] for r in parts):
            raise SystemExit(f"the runs' row {j} differ: {[r['attack'] for r in parts]}")
        rows.append(_merged_row(parts, fooled[by_row.get(name, name)], counts))
    worst = torch.stack(list(fooled.values())).any(0)
    rows.append({"attack": "per-image worst case",
                 "accuracy": round(1 - float(worst.float().mean()), 4)})
    images = {"index": index, "label": [v for run in runs for v in run["images"]["label"]],
              "fooled": {a: f.tolist() for a, f in fooled.items()}}
    if args.worst_with:
        _, yte = load_mnist67("test", args.data)
        whitebox = whitebox_fooled(args.worst_with, runs[0]["model"], len(yte), index)
        rows.append(with_whitebox(worst, whitebox, args.worst_with))
        images["fooled"]["whitebox_worst"] = whitebox.tolist()
    sparse_rs = rows[1]["accuracy"]
    out = runs[0] | {"n": len(index), "rows": rows, "images": images, "command": command,
                     "merged": {"from": args.merge, "n": counts,
                                "commands": [run["command"] for run in runs]},
                     "independent_within_0.01": all(r["accuracy"] >= sparse_rs - 0.01
                                                    for r in rows[2:-1 - bool(args.worst_with)])}
    out.pop("shard", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    for row in rows:
        print(json.dumps(row))


def select_digits(labels: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """Test-set indices to attack: ``--n`` stratified, those below ``--below``, less
    ``--skip-done``, then ``--shard``."""
    idx = torch.as_tensor(stratified_sample(labels, args.n, seed=0))
    if args.below is not None:
        idx = idx[idx < args.below]
    if args.skip_done:
        done = {int(i) for path in args.skip_done
                for i in json.loads(Path(path).read_text())["images"]["index"]}
        idx = idx[torch.tensor([int(i) not in done for i in idx], dtype=torch.bool)]
    if args.shard:
        try:
            part, parts = (int(v) for v in args.shard.split("/"))
            if not 0 <= part < parts:
                raise ValueError
        except ValueError:
            raise SystemExit(f"--shard {args.shard!r}: give I/N with 0 <= I < N, e.g. 0/2") from None
        idx = idx[part::parts]
    return idx


def load(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """The model to check and its name."""
    if args.state_dict:
        from bench_l0_training import make_model

        model = make_model(args.narrow)
        model.load_state_dict(torch.load(args.state_dict, map_location="cpu", weights_only=True))
        return model.to(args.device).eval(), Path(args.state_dict).stem
    if not args.model:
        raise SystemExit("give --model (with --models-dir) or --state-dict")
    return load_model(model_path(args.models_dir, args.model), args.device).eval(), args.model


def main(argv: list[str] | None = None) -> None:
    """The command line (``argv``: its arguments; None: ``sys.argv``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--model", default=None, help="registry name, e.g. stacker_adv_mean")
    ap.add_argument("--state-dict", default=None, help="a bench_l0_training.py member instead")
    ap.add_argument("--narrow", action="store_true", help="--state-dict: SmallCNN 16/32/128")
    ap.add_argument("--n", type=int, default=100, help="stratified test digits")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--queries", type=int, default=10_000, help="Sparse-RS queries")
    ap.add_argument("--attacks", nargs="*", default=["pixle", "onepixel"],
                    help="torchattacks attacks to run after ours (none: --attacks alone)")
    ap.add_argument("--pixle-patch", type=int, default=4, help="largest patch side (pixels)")
    ap.add_argument("--pixle-restarts", type=int, default=50)
    ap.add_argument("--pixle-iterations", type=int, default=20)
    ap.add_argument("--onepixel-steps", type=int, default=100, help="DE generations")
    ap.add_argument("--onepixel-popsize", type=int, default=100,
                    help="population (at least 3 k: 3 numbers per pixel)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seeds our Sparse-RS and the torchattacks attacks")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--worst-with", default=None,
                    help="bench_full_n.py JSON of the same model on all test digits: add the "
                         "worst case with its white-box worst case")
    ap.add_argument("--skip-done", nargs="*", default=[],
                    help="earlier JSONs of this script: leave out the digits they covered")
    ap.add_argument("--below", type=int, default=None,
                    help="keep only test indices below this (--n 1986 --below 500: the first 500 "
                         "test digits, the hard ones; a screen a later --skip-done run completes)")
    ap.add_argument("--shard", default=None, help="I/N: keep every N-th digit from the I-th")
    ap.add_argument("--merge", nargs="*", default=[],
                    help="complete JSONs of this script on disjoint digits (or one): join them "
                         "into one (--out), with --worst-with if given, running no attack")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "l0_independent.json"))
    args = ap.parse_args(argv)
    command = " ".join(sys.argv if argv is None else [str(Path(__file__).relative_to(ROOT)), *argv])
    if args.merge:
        merge(args, command)
        return

    model, name = load(args)
    xte, yte = load_mnist67("test", args.data)
    idx = select_digits(yte, args)
    whitebox = whitebox_fooled(args.worst_with, name, len(yte), idx) if args.worst_with else None
    x, y = xte[idx].to(args.device), yte[idx].to(args.device)
    with torch.no_grad():
        clean = (model(x).argmax(1) != y).cpu()
    start = time.perf_counter()
    res = SparseRS(k=args.k, max_queries=args.queries, eval_batch=4096,
                   seed=args.seed).run(model, x, y)
    ours = res.success.cpu() | clean
    rows = [{"attack": "clean", "accuracy": round(1 - float(clean.float().mean()), 4)},
            {"attack": f"ours: Sparse-RS k={args.k}, {args.queries} queries",
             "accuracy": round(1 - float(ours.float().mean()), 4),
             "seconds": round(time.perf_counter() - start, 1),
             "max_l0": int((res.images != x).flatten(1).sum(1).max()),
             "mean_queries": round(float(res.queries.double().mean()), 1)}]
    print(json.dumps(rows[-1]), flush=True)
    worst = ours.clone()
    fooled_by = {"clean": clean, "sparse_rs": ours}
    for attack in args.attacks + [None]:
        if attack is not None:
            row = run_torchattack(attack, model, x, y, args)
            theirs = row.pop("fooled") | clean
            fooled_by[attack] = theirs
            worst |= theirs
            row["fooled_not_by_ours"] = int((theirs & ~ours).sum())
            rows.append(row)
            print(json.dumps(row), flush=True)
        done = rows + [{"attack": "per-image worst case",
                        "accuracy": round(1 - float(worst.float().mean()), 4)}]
        if whitebox is not None:
            done.append(with_whitebox(worst, whitebox, args.worst_with))
        out = {"model": name, "n": len(y), "k": args.k, "device": str(args.device),
               "shard": args.shard,
               "machine": platform.platform(), "torchattacks": torchattacks.__version__,
               "command": command, "args": vars(args), "rows": done,
               "complete": attack is None, "independent_within_0.01":
               all(r["accuracy"] >= rows[1]["accuracy"] - 0.01 for r in rows[2:]),
               "images": {"index": idx.tolist(), "label": y.cpu().tolist(),
                          "fooled": {a: f.tolist() for a, f in fooled_by.items()}
                          | ({} if whitebox is None else {"whitebox_worst": whitebox.tolist()})}}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")  # after every attack
    print(json.dumps(done[-1]))
    print(f"independent attacks within 0.01 of ours: {out['independent_within_0.01']}")


if __name__ == "__main__":
    main()
