"""Hydra glue: the only modules that know ``DictConfig``. Entry points call into these."""
