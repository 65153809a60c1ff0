"""Training throughput: Lightning vs a plain PyTorch loop, per training defense.

For each defense (none, fgsm, blackbox by default) both loops train the same network, with the
same preprocessing, batch size, data and defense object, for the same number of steps; the table
gives images per second (clean images of the batch per second of training) and Lightning's
overhead over the plain loop. The blackbox/fgsm time ratio is the budget of the black-box
defense (at most 3x).

Usage::

    python benchmarks/bench_train.py                 # 40 steps per run
    python benchmarks/bench_train.py --steps 10 --defenses none fgsm

Writes a table to stdout and JSON to ``benchmarks/results/train.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from advdefense.data import load_mnist67
from advdefense.io import atomic_write_text
from advdefense.lit import DefendedClassifier
from advdefense.models import member_pipeline
from advdefense.nets import SmallCNN

ROOT = Path(__file__).resolve().parents[1]


def make_defense(name: str):
    """The defense exactly as ``conf/defense/<name>.yaml`` builds it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "defense"), version_base="1.3"):
        return instantiate(compose(name))


def loader(images: torch.Tensor, labels: torch.Tensor, batch: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(images, labels), batch_size=batch, shuffle=True, generator=g,
                      drop_last=True)


def plain_loop(defense_name: str, data: DataLoader, steps: int) -> float:
    torch.manual_seed(0)
    model = member_pipeline(torch.nn.Identity(), SmallCNN())
    defense = make_defense(defense_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start, step = time.perf_counter(), 0
    while step < steps:
        for x, y in data:
            xb, yb = defense(model, x, y, step)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == steps:
                break
    return time.perf_counter() - start


def lightning_loop(defense_name: str, data: DataLoader, steps: int) -> float:
    torch.manual_seed(0)
    module = DefendedClassifier(SmallCNN(), torch.nn.Identity(), make_defense(defense_name))
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--defenses", nargs="+", default=["none", "fgsm", "blackbox"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    args = parser.parse_args()
    images, labels = load_mnist67("train")
    data = loader(images, labels, args.batch)
    rows = []
    for name in args.defenses:
        plain_loop(name, data, 3)  # warm-up
        t_plain = plain_loop(name, data, args.steps)
        t_light = lightning_loop(name, data, args.steps)
        n = args.steps * args.batch
        rows.append({"defense": name, "steps": args.steps, "batch": args.batch,
                     "plain_img_s": round(n / t_plain, 1), "lightning_img_s": round(n / t_light, 1),
                     "lightning_overhead_pct": round(100 * (t_light / t_plain - 1), 1)})
    by = {r["defense"]: r for r in rows}
    ratio = (by["fgsm"]["lightning_img_s"] / by["blackbox"]["lightning_img_s"]
             if "fgsm" in by and "blackbox" in by else None)
    print(f"{'defense':10} {'plain img/s':>12} {'lightning img/s':>16} {'overhead %':>11}")
    for r in rows:
        print(f"{r['defense']:10} {r['plain_img_s']:>12} {r['lightning_img_s']:>16} "
              f"{r['lightning_overhead_pct']:>11}")
    if ratio:
        print(f"blackbox step time / fgsm step time: {ratio:.2f}x (budget: 3x)")
    result = {"machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "rows": rows, "blackbox_over_fgsm": ratio}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
