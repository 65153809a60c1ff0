"""Train a member or an ensemble: ``python train.py [group=option ...] [key=value ...]``."""

import hydra
from omegaconf import DictConfig

from advdefense.cli.entry import prepare_entry

prepare_entry(__file__)  # anchors paths.root_dir at this folder; see advdefense/cli/entry.py


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from advdefense.cli.experiment import is_experiment, run_experiment
    from advdefense.cli.train import train

    if is_experiment(cfg):  # experiment=paper / robust: members, ensembles, evaluation
        run_experiment(cfg)
        return None
    return train(cfg).get("val/acc")


if __name__ == "__main__":
    main()
