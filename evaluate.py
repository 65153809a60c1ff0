"""Evaluate registry models under the attack grid: ``python evaluate.py [key=value ...]``.

    python evaluate.py                        # every model in models/, all attacks and threats
    python evaluate.py eval.n=200             # quick mode on a stratified 200-image subset
    python evaluate.py ckpt=models/none-fgsm.ckpt
    python evaluate.py eval.threats=[whitebox,blackbox] logger=wandb
"""

import hydra
from omegaconf import DictConfig

from advdefense.cli.entry import prepare_entry

prepare_entry(__file__)  # anchors paths.root_dir at this folder; see advdefense/cli/entry.py


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from advdefense.cli.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
