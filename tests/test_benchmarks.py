"""The benchmarks' own arithmetic (their timings are not tested: they are measurements)."""

from __future__ import annotations

import importlib.util

import torch
from helpers import ROOT


def _bench(name: str = "bench_forward"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_forward():
    return _bench("bench_forward")


def test_flops_per_image_counts_every_convolution_and_linear_layer() -> None:
    from advdefense.lit.classifier import member_pipeline
    from advdefense.nets import SmallCNN
    from advdefense.preprocess import Identity

    bench = _bench_forward()
    member = member_pipeline(Identity(), SmallCNN()).eval()  # 16/32 channels, hidden 128
    by_hand = 2 * (25 * 16 * 28 * 28          # conv 1 -> 16, 5x5, on 28x28
                   + 16 * 25 * 32 * 14 * 14   # conv 16 -> 32, 5x5, on 14x14
                   + 32 * 7 * 7 * 128         # linear 1,568 -> 128
                   + 128 * 2)                 # linear 128 -> 2
    assert bench.flops_per_image(member, torch.device("cpu")) == by_hand
    peak = bench.conv_peak(member, torch.device("cpu"), repeats=1)
    assert peak["input"] == [256, 16, 14, 14] and peak["gflops_per_s_cpu"] > 0


def test_full_n_floor_counts_attack_passes_and_scales_them_to_the_test_set() -> None:
    """Passes through an attacked model split by whether they carry an input gradient; the
    floor is those passes at the model's own rates, scaled to 1,986 images on 2 cores."""
    from advdefense.attacks.pgd import PGD
    from advdefense.nets import SmallCNN

    bench = _bench("bench_full_n")
    counter = bench.PassCounter()
    model = SmallCNN().eval()
    model.register_forward_hook(counter.hook)
    x, y = torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    PGD(0.3, 0.01, 5, early_stop=False, random_start=False).run(model, x, y)
    assert counter.gradient == 5 * 8                 # one gradient pass per step and image
    assert counter.forward >= 8                      # the final check (no gradient)
    with torch.no_grad():
        model(x)
    out = bench.floor({"forward": 1000, "gradient": 500}, {"forward": 100.0, "gradient": 50.0},
                      n=10, threads=2)
    assert out["floor_s"] == 20.0 and out["floor_s_per_image"] == 2.0
    assert out["passes_per_image"] == {"forward": 100.0, "gradient": 50.0}
    assert out["floor_min_1986_on_2_cores"] == round(2.0 * 1986 / 2 / 60, 1)


def test_l0_check_keeps_per_image_outcomes_that_give_its_accuracies(tmp_path, data_dir,
                                                                    monkeypatch) -> None:
    """check_l0_independent.py writes, per digit, which attacks fooled it; the JSON's accuracies
    are those outcomes' means, so a worst case with other attacks can be formed later."""
    import json
    import subprocess
    import sys

    bench = _bench("bench_l0_training")
    torch.manual_seed(0)
    state = tmp_path / "member.pt"
    torch.save(bench.make_model(narrow=True).state_dict(), state)
    from advdefense.data import load_mnist67
    from advdefense.sampling import stratified_sample

    _, labels = load_mnist67("test", str(data_dir))
    first = int(stratified_sample(labels, 6, seed=0)[0])
    bench_json = tmp_path / "full_n.json"     # a bench_full_n.py run whose worst case broke one
    bench_json.write_text(json.dumps({
        "per_shard": [{"full_n": {"models": ["member"]}}],
        "combined": {"worst_case/whitebox": {"n": len(labels), "fooled": [first]}}}))
    out = tmp_path / "l0.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_l0_independent.py"),
                    "--state-dict", str(state), "--narrow", "--n", "6", "--queries", "40",
                    "--attacks", "--data", str(data_dir), "--out", str(out),
                    "--worst-with", str(bench_json)],
                   check=True, cwd=tmp_path, capture_output=True)
    res = json.loads(out.read_text())
    images = res["images"]
    assert len(images["index"]) == len(set(images["index"])) == 6 == res["n"]
    assert sorted(images["label"]) == [0, 0, 0, 1, 1, 1]          # stratified
    fooled = images["fooled"]
    assert set(fooled) == {"clean", "sparse_rs", "whitebox_worst"}
    assert fooled["whitebox_worst"] == [i == first for i in images["index"]]
    both = [a or b for a, b in zip(fooled["sparse_rs"], fooled["whitebox_worst"], strict=True)]
    assert res["rows"][-1]["accuracy"] == round(1 - sum(both) / 6, 4)
    assert res["rows"][-1]["whitebox_alone"] == round(5 / 6, 4)
    assert all(not c or s for c, s in zip(fooled["clean"], fooled["sparse_rs"], strict=True))
    rows = {r["attack"]: r["accuracy"] for r in res["rows"]}
    assert rows["clean"] == round(1 - sum(fooled["clean"]) / 6, 4)
    assert rows["per-image worst case"] == round(1 - sum(fooled["sparse_rs"]) / 6, 4)

    # the rest in-process (the script's main), to keep the suite short
    import pytest

    check = _bench("check_l0_independent")

    # --merge of one run: the same outcomes joined to another white-box run, no attack rerun
    second = images["index"][-1]
    bench_json.write_text(json.dumps({
        "per_shard": [{"full_n": {"models": ["member"]}}],
        "combined": {"worst_case/whitebox": {"n": len(labels), "fooled": [first, second]}}}))
    joined = tmp_path / "joined.json"
    join = ["--merge", str(out), "--worst-with", str(bench_json), "--data", str(data_dir),
            "--out", str(joined)]
    check.main(join)
    again = json.loads(joined.read_text())
    wb = [i in (first, second) for i in images["index"]]
    assert again["images"]["fooled"]["whitebox_worst"] == wb
    assert again["images"]["fooled"]["sparse_rs"] == fooled["sparse_rs"]
    assert again["rows"][:-1] == res["rows"][:-1]          # the attacks' rows are kept as run
    both = [a or b for a, b in zip(fooled["sparse_rs"], wb, strict=True)]
    assert again["rows"][-1]["accuracy"] == round(1 - sum(both) / 6, 4)
    assert again["rows"][-1]["whitebox_alone"] == round(4 / 6, 4)
    with pytest.raises(SystemExit, match="not on 'other'"):
        check.main(join + ["--model", "other"])

    # --skip-done + --shard: the rest of 10 digits in two processes; --merge joins all three runs
    script = ["--state-dict", str(state), "--narrow", "--n", "10", "--queries", "40",
              "--attacks", "--data", str(data_dir), "--skip-done", str(out)]
    for part in (0, 1):
        check.main(script + ["--shard", f"{part}/2", "--out", str(tmp_path / f"p{part}.json")])
    parts = [json.loads((tmp_path / f"p{part}.json").read_text()) for part in (0, 1)]
    rest = [i for i in stratified_sample(labels, 10, seed=0).tolist() if i not in images["index"]]
    assert parts[0]["images"]["index"] == rest[0::2] and parts[1]["images"]["index"] == rest[1::2]
    merged = tmp_path / "all.json"
    check.main(["--merge", str(out), str(tmp_path / "p0.json"), str(tmp_path / "p1.json"),
                "--worst-with", str(bench_json), "--data", str(data_dir), "--out", str(merged)])
    m = json.loads(merged.read_text())
    runs = [res] + parts
    assert m["images"]["index"] == images["index"] + rest[0::2] + rest[1::2]
    assert m["n"] == 6 + len(rest) == len(set(images["index"] + rest))
    srs = [f for r in runs for f in r["images"]["fooled"]["sparse_rs"]]
    assert m["images"]["fooled"]["sparse_rs"] == srs
    rows = {r["attack"].split(":")[0]: r for r in m["rows"]}
    assert rows["ours"]["accuracy"] == round(1 - sum(srs) / m["n"], 4)
    assert rows["ours"]["seconds"] == round(sum(r["rows"][1]["seconds"] for r in runs), 1)
    assert rows["ours"]["max_l0"] == max(r["rows"][1]["max_l0"] for r in runs) <= 20
    wb = [i in (first, second) for i in m["images"]["index"]]
    either = [a or b for a, b in zip(srs, wb, strict=True)]
    assert m["rows"][-1]["accuracy"] == round(1 - sum(either) / m["n"], 4)
    # --below: only test indices under the bound, still stratified and in sample order;
    # --seed reaches our Sparse-RS
    seeds = []

    class Recorded(check.SparseRS):
        def __init__(self, *a, **kw) -> None:
            seeds.append(kw.get("seed"))
            super().__init__(*a, **kw)

    monkeypatch.setattr(check, "SparseRS", Recorded)
    low = tmp_path / "low.json"
    check.main(["--state-dict", str(state), "--narrow", "--n", "40", "--queries", "2",
                "--attacks", "--data", str(data_dir), "--below", "300", "--seed", "3",
                "--out", str(low)])
    assert seeds == [3]
    sample = stratified_sample(labels, 40, seed=0).tolist()
    assert json.loads(low.read_text())["images"]["index"] == [i for i in sample if i < 300] != []
    # runs with another attack seed are refused: the merged JSON would report one seed
    seeded = json.loads(out.read_text())
    seeded["args"]["seed"] = 3
    (tmp_path / "seeded.json").write_text(json.dumps(seeded))
    with pytest.raises(SystemExit, match="'seed': 3"):
        check.main(["--merge", str(tmp_path / "p0.json"), str(tmp_path / "seeded.json"),
                    "--data", str(data_dir), "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="share digits"):
        check.main(["--merge", str(out), str(out), "--data", str(data_dir),
                    "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_full_n_rows_keep_the_test_indices_of_the_digits_they_fooled() -> None:
    from advdefense.evaluation.cells import Cell

    bench = _bench("bench_full_n")
    part = [10, 20, 30, 40]                      # a shard's test-set indices
    full = Cell("m", "fgsm", "whitebox", labels=[0, 1, 0, 1], pred=[0, 0, 1, 1], conf=[1.0] * 4)
    assert bench.per_image(full, part) == {"fooled": [20, 30], "covered": None}
    budget = Cell("m", "pgd", "whitebox", labels=[0, 1], pred=[1, 1], conf=[1.0] * 2,
                  index=[3, 1])
    assert bench.per_image(budget, part) == {"fooled": [40], "covered": [20, 40]}


def test_full_n_combined_rows_merge_what_the_shards_fooled_and_covered() -> None:
    bench = _bench("bench_full_n")
    shards = [{"n": 2, "index": [10, 30], "rows": {
                   "fgsm/whitebox": {"n": 2, "correct": 1, "seconds": 1.0, "fooled": [30],
                                     "covered": None},
                   "pgd/whitebox": {"n": 1, "correct": 0, "seconds": 2.0, "fooled": [10],
                                    "covered": [10]}}},
              {"n": 2, "index": [20, 40], "rows": {
                   "fgsm/whitebox": {"n": 2, "correct": 2, "seconds": 1.5, "fooled": [],
                                     "covered": None},
                   "pgd/whitebox": {"n": 1, "correct": 1, "seconds": 2.0, "fooled": [],
                                    "covered": [40]}}}]
    out = bench.combine(shards)
    assert out["fgsm/whitebox"] == {"n": 4, "correct": 3, "seconds": 2.5, "fooled": [30],
                                    "covered": None, "accuracy": 0.75}
    assert out["pgd/whitebox"]["covered"] == [10, 40] and out["pgd/whitebox"]["fooled"] == [10]
    assert out["pgd/whitebox"]["accuracy"] == 0.5
    del shards[1]["index"]                       # a shard written before it kept its index
    assert "covered" not in bench.combine(shards)["fgsm/whitebox"]


def test_l0_check_refuses_a_full_n_run_of_another_model(tmp_path) -> None:
    import json

    import pytest

    bench = _bench("check_l0_independent")
    path = tmp_path / "full_n.json"
    path.write_text(json.dumps({"per_shard": [{"full_n": {"models": ["other"]}}], "combined": {
        "worst_case/whitebox": {"n": 10, "fooled": [3]}}}))
    with pytest.raises(SystemExit, match="not on 'member'"):
        bench.whitebox_fooled(str(path), "member", 10, [1, 3])
    assert bench.whitebox_fooled(str(path), "other", 10, [1, 3]).tolist() == [False, True]
    with pytest.raises(SystemExit, match="not all 12"):
        bench.whitebox_fooled(str(path), "other", 12, [1, 3])


def test_linf_check_keeps_per_image_outcomes_and_joins_the_white_box_worst_case(tmp_path) -> None:
    """check_linf_independent.py: each digit's outcome per attack gives its accuracies; with
    --worst-with the evaluation's white-box worst case is or-ed in, and a JSON of another model is
    refused before any attack runs."""
    import json

    import pytest

    from advdefense.lit.classifier import member_pipeline
    from advdefense.nets import SmallCNN
    from advdefense.preprocess import Identity
    from advdefense.registry import register_model
    from advdefense.sampling import stratified_sample

    torch.manual_seed(0)
    spec = {"preprocess": {"_target_": "advdefense.preprocess.Identity"},
            "net": {"_target_": "advdefense.nets.SmallCNN", "channels": [4, 8], "hidden": 16}}
    register_model(tmp_path, "tiny", member_pipeline(Identity(), SmallCNN((4, 8), 16)), "member",
                   spec)
    from advdefense.data import load_mnist67

    _, labels = load_mnist67("test")
    idx = [int(i) for i in stratified_sample(labels, 4, 0)]
    full_n = tmp_path / "full_n.json"
    full_n.write_text(json.dumps({"per_shard": [{"full_n": {"models": ["tiny"]}}], "combined": {
        "worst_case/whitebox": {"n": len(labels), "fooled": [idx[0]]}}}))
    bench = _bench("check_linf_independent")
    out = tmp_path / "linf.json"
    res = bench.main(["--models-dir", str(tmp_path), "--model", "tiny", "--n", "4",
                      "--worst-with", str(full_n), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    images = res["images"]
    assert images["index"] == idx and images["fooled"]["whitebox_worst"] == [True] + [False] * 3
    attacks = list(res["accuracy"])
    for name in attacks:
        assert res["accuracy"][name] == round(1 - sum(images["fooled"][name]) / 4, 4)
    any_fooled = [any(images["fooled"][a][j] for a in attacks + ["whitebox_worst"])
                  for j in range(4)]
    assert res["with_whitebox"]["per_image_worst"] == round(1 - sum(any_fooled) / 4, 4)
    assert res["with_whitebox"]["whitebox_alone"] == 0.75
    with pytest.raises(SystemExit, match="not on 'tiny'"):
        full_n.write_text(full_n.read_text().replace('["tiny"]', '["other"]'))
        bench.main(["--models-dir", str(tmp_path), "--model", "tiny", "--n", "4",
                    "--worst-with", str(full_n), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_l0_training_rows_can_all_be_skipped_and_worst_cases_use_what_ran() -> None:
    """bench_l0_training.py --skip: with every attack row skipped the member is only trained
    (no worst case formed from nothing); with only the clean row, each worst case is the clean
    accuracy."""
    import argparse

    bench = _bench("bench_l0_training")
    torch.manual_seed(0)
    model = bench.make_model(narrow=True).eval()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])
    names = [name for name, _ in bench.attacks(argparse.Namespace(skip=[], spatial=False,
                                                                  queries=2))]
    args = argparse.Namespace(skip=names, spatial=False, queries=2)
    assert bench.evaluate(model, x, y, args) == []
    args.skip = [n for n in names if n != "clean"]
    rows = bench.evaluate(model, x, y, args)
    with torch.no_grad():
        clean = round(float((model(x).argmax(1) == y).float().mean()), 4)
    assert [r["attack"] for r in rows][0] == "clean" and len(rows) == 3
    assert all(r["accuracy"] == clean for r in rows)
