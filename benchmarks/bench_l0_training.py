"""Does sparse (L0) adversarial training at k = 20 help, judged by the query-only attack?

Trains one member per defense config on the same data, seed and budget, then attacks every
member on the same stratified test digits with: clean, PGD-40 (L-inf 0.3), SparsePGD k = 20
(3 restarts x 40 steps, step sizes 0.5 / 1 / 2), JSMA k = 20, and the two query-only L0
attacks at k = 20: Sparse-RS (10,000 queries) and the local search (10,000 queries); with
``--spatial`` also the two spatial grids. Rows also give the per-image worst case over the k = 20
attacks. A member that resists the gradient L0 attacks but not the query-only ones at the same k
has masked its gradients (the SparsePGD-78 training measured in ``l0_training.json``), so the
query-only rows are the verdict.

Defenses are YAML files, ``conf/defense/<name>.yaml`` or ``benchmarks/l0_defenses/<name>.yaml``
(candidates not yet in conf/). The member is the robust experiment's unsqueezed one: no
preprocessing, SmallCNN 32/64/256 (``--narrow``: 16/32/128), Adam 1e-3, batch 128.

    # the comparison recorded in docs/results.md (on a GPU; about 1 min per member and epoch on CPU)
    python benchmarks/bench_l0_training.py --device cuda --epochs 6 --n 200 \\
        --defenses pgd_spatial_uae pgd_spatial_uae_sparsepgd20 pgd_spatial_uae_sparsers20
    # fine-tune one trained member for one epoch under each mix (the recorded CPU comparison)
    python benchmarks/bench_l0_training.py --narrow --init /tmp/m/pgd_spatial_uae.pt \
        --epochs 1 --train-n 4096 --n 100 --skip "local search k=20" \
        --defenses pgd_spatial_uae pgd_spatial_uae_sparsers20
    # smoke run
    python benchmarks/bench_l0_training.py --epochs 1 --train-n 512 --n 16 --queries 300

Writes ``benchmarks/results/l0_training_k20.json`` (after every member, so a cut-off run keeps
what it finished) and, with ``--save-dir``, each member's state dict (``--load-dir`` reuses them).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from advdefense.attacks import JSMA, PGD, LocalSearch, SparsePGD, SparseRS  # noqa: E402
from advdefense.attacks.spatial import SpatialGrid  # noqa: E402
from advdefense.data import load_mnist67  # noqa: E402
from advdefense.io import atomic_write_text  # noqa: E402
from advdefense.nets import SmallCNN  # noqa: E402
from advdefense.preprocess import Identity  # noqa: E402
from advdefense.sampling import stratified_sample  # noqa: E402

L0_ATTACKS = ("SparsePGD k=20", "JSMA k=20", "Sparse-RS k=20", "local search k=20")
QUERY_ATTACKS = ("Sparse-RS k=20", "local search k=20")


def defense_path(name: str) -> Path:
    """``conf/defense/<name>.yaml`` or, for candidates, ``benchmarks/l0_defenses/<name>.yaml``."""
    for folder in (ROOT / "conf" / "defense", ROOT / "benchmarks" / "l0_defenses"):
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise SystemExit(f"no defense config {name!r} in conf/defense or benchmarks/l0_defenses")


def make_model(narrow: bool) -> nn.Module:
    """The unsqueezed robust member: (N, 1, 28, 28) in [0, 1] -> (N, 2) logits."""
    net = SmallCNN() if narrow else SmallCNN(channels=[32, 64], hidden=256)
    return nn.Sequential(Identity(), net)


def train(defense_name: str, args: argparse.Namespace, images: torch.Tensor,
          labels: torch.Tensor) -> tuple[nn.Module, float]:
    """Adam 1e-3 on the defense's batches; returns the model (eval mode) and seconds taken."""
    torch.manual_seed(args.seed)
    model = make_model(args.narrow).to(args.device)
    if args.init:  # fine-tune a saved member instead of training from scratch
        model.load_state_dict(torch.load(args.init, map_location=args.device, weights_only=True))
    defense = instantiate(OmegaConf.load(defense_path(defense_name)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step, start = 0, time.perf_counter()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(images), device=images.device)
        for i in range(0, len(images), args.batch):
            idx = perm[i:i + args.batch]
            x, y = defense(model, images[idx], labels[idx], step)
            model.train()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            step += 1
        print(f"{defense_name} epoch {epoch + 1}/{args.epochs}: "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return model.eval(), time.perf_counter() - start


def attacks(args: argparse.Namespace) -> list[tuple[str, object | None]]:
    """The evaluation rows, all at the grid's settings with budget k = 20 for the L0 ones."""
    rows: list[tuple[str, object | None]] = [
        ("clean", None),
        ("PGD-40 eps 0.3", PGD(eps=0.3, alpha=0.01, steps=40, early_stop=True)),
        ("SparsePGD k=20", SparsePGD(k=20, alpha=[0.5, 1.0, 2.0], steps=40, restarts=3,
                                     early_stop=True)),
        ("JSMA k=20", JSMA(k=20, fallback=True)),
        ("Sparse-RS k=20", SparseRS(k=20, max_queries=args.queries, eval_batch=4096)),
        ("local search k=20", LocalSearch(k=20, max_queries=args.queries, eval_batch=4096)),
    ]
    rows = [r for r in rows if r[0] not in args.skip]
    if args.spatial:
        rows += [("spatial Engstrom grid", SpatialGrid(preset="engstrom", eval_batch=4096)),
                 ("spatial UAE grid", SpatialGrid(preset="uae_warmup", eval_batch=4096))]
    return rows


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             args: argparse.Namespace) -> list[dict]:
    """One row per attack: accuracy on the n digits, seconds, and the worst-case rows."""
    rows, fooled_by = [], {}
    for name, attack in attacks(args):
        t = time.perf_counter()
        if attack is None:
            with torch.no_grad():
                fooled = model(x).argmax(1) != y
            l0 = torch.zeros_like(y)
        else:
            res = attack.run(model, x, y)
            fooled, l0 = res.success, (res.images != x).flatten(1).sum(1)
            if name in L0_ATTACKS and int(l0.max()) > 20:
                raise AssertionError(f"{name} changed {int(l0.max())} > 20 pixels")
        fooled_by[name] = fooled.cpu()
        rows.append({"attack": name, "accuracy": round(1 - float(fooled.float().mean()), 4),
                     "seconds": round(time.perf_counter() - t, 1)})
        print("   ", json.dumps(rows[-1]), flush=True)
    for label, names in (("worst case L0 k=20 (4 attacks)", L0_ATTACKS),
                         ("worst case query-only k=20", QUERY_ATTACKS)):
        ran = [fooled_by[a] for a in ("clean", *names) if a in fooled_by]
        if not ran:  # every row of this worst case was --skip'ped
            continue
        any_fooled = torch.stack(ran).any(0)
        rows.append({"attack": label, "accuracy": round(1 - float(any_fooled.float().mean()), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defenses", nargs="+",
                    default=["pgd_spatial_uae", "pgd_spatial_uae_sparsepgd20",
                             "pgd_spatial_uae_sparsers20"])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train-n", type=int, default=None,
                    help="first n training digits after a seeded shuffle (default all)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--narrow", action="store_true", help="SmallCNN 16/32/128, not 32/64/256")
    ap.add_argument("--n", type=int, default=200, help="stratified test digits")
    ap.add_argument("--queries", type=int, default=10_000, help="queries of the query-only attacks")
    ap.add_argument("--spatial", action="store_true", help="add the two spatial grid rows")
    ap.add_argument("--skip", nargs="*", default=[], help="attack rows to leave out, by name")
    ap.add_argument("--init", default=None, help="start every member from this state dict")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--save-dir", default=None, help="write <defense>.pt state dicts here")
    ap.add_argument("--load-dir", default=None, help="reuse <defense>.pt from here, no training")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "l0_training_k20.json"))
    args = ap.parse_args()

    xtr, ytr = load_mnist67("train", args.data)
    if args.train_n:
        keep = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(args.seed))
        xtr, ytr = xtr[keep[:args.train_n]], ytr[keep[:args.train_n]]
    xtr, ytr = xtr.to(args.device), ytr.to(args.device)
    xte, yte = load_mnist67("test", args.data)
    idx = stratified_sample(yte, args.n, seed=0)
    x, y = xte[idx].to(args.device), yte[idx].to(args.device)
    out = {"machine": platform.platform(), "device": str(args.device),
           "cuda": torch.cuda.get_device_name() if "cuda" in str(args.device) else None,
           "threads": torch.get_num_threads(), "command": " ".join(sys.argv),
           "training_digits": len(ytr), "test_digits": len(y), "args": vars(args), "members": []}
    for name in args.defenses:
        if args.load_dir and (Path(args.load_dir) / f"{name}.pt").is_file():
            model = make_model(args.narrow).to(args.device)
            model.load_state_dict(torch.load(Path(args.load_dir) / f"{name}.pt",
                                             map_location=args.device, weights_only=True))
            model, train_s = model.eval(), None
        else:
            model, train_s = train(name, args, xtr, ytr)
            if args.save_dir:
                Path(args.save_dir).mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), Path(args.save_dir) / f"{name}.pt")
        print(f"{name}: evaluating on {len(y)} digits", flush=True)
        rows = evaluate(model, x, y, args)
        out["members"].append({"defense": name, "train_seconds": train_s and round(train_s, 1),
                               "rows": rows})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    names = [r["attack"] for r in out["members"][0]["rows"]]
    print("\n| attack | " + " | ".join(m["defense"] for m in out["members"]) + " |")
    print("|---" * (len(out["members"]) + 1) + "|")
    for i, a in enumerate(names):
        print(f"| {a} | " + " | ".join(str(m["rows"][i]["accuracy"]) for m in out["members"]) + " |")


if __name__ == "__main__":
    main()
