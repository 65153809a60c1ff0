"""Console helpers: third-party noise silenced precisely, tables never cut, one-line metrics."""

from __future__ import annotations

import logging
import warnings

from advdefense.cli.common import print_metrics, print_table, quiet_third_party

LEAF = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"


def test_lightning_tips_are_dropped_and_the_rest_kept(caplog):
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter per message
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    assert sum(type(f).__name__ == "_DropPrefix" for f in rank_zero.filters) == 2
    with caplog.at_level("INFO"):
        rank_zero.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        rank_zero.info("TPU available: False, using: 0 TPU cores")
        rank_zero.info("GPU available: False, used: False")
        logging.getLogger("advdefense").info("💡 Tip: ours stays")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False",
                                                        "💡 Tip: ours stays"]


def test_only_the_listed_deprecation_warning_is_ignored():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn_explicit(LEAF, FutureWarning, "_pytree.py", 21,
                               module="pytorch_lightning.utilities._pytree")
        warnings.warn_explicit("something else is deprecated", FutureWarning, "_pytree.py", 22,
                               module="pytorch_lightning.utilities._pytree")
        warnings.warn_explicit(LEAF, FutureWarning, "mine.py", 1, module="advdefense.mine")
    assert [(str(w.message), w.filename) for w in seen] == [
        ("something else is deprecated", "_pytree.py"), (LEAF, "mine.py")]


def test_print_table_is_never_cut(capsys):
    name = "none-pgd_spatial_uae_wide-s123"
    print_table("t", [{"model": name, **{f"column_{i}": 0.5 for i in range(10)}}])
    out = capsys.readouterr().out
    assert name in out and "column_9" in out and "…" not in out


def test_print_metrics_is_one_line(caplog):
    with caplog.at_level("INFO", logger="advdefense"):
        print_metrics("none-none", {"test/acc": 0.9678, "test/cm_tn": 894.0, "test/cm_fp": 64.0,
                                    "test/cm_fn": 0.0, "test/cm_tp": 1028.0, "val/acc": 0.9})
    (record,) = caplog.records
    assert record.getMessage() == ("none-none: test acc 0.9678, confusion [[894, 64], [0, 1028]] "
                                   "(rows true 6/7)")


def test_logger_many_builds_the_csv_and_the_wandb_logger(tmp_path, data_dir):
    """``logger=many`` (conf/logger/many.yaml) is ``logger=csv`` and ``logger=wandb`` at once."""
    from helpers import compose
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    from advdefense.cli.common import build_loggers

    cfg = compose("train", ["logger=many"], tmp_path, data_dir)
    assert [type(lg) for lg in build_loggers(cfg)] == [CSVLogger, WandbLogger]


def test_progress_bar_off_drops_the_progress_bar_callback(tmp_path, data_dir):
    """``trainer.enable_progress_bar=false`` alone builds a trainer (Lightning would refuse the
    configured TQDM callback) and keeps every other callback."""
    from helpers import compose
    from pytorch_lightning import Trainer
    from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar

    from advdefense.cli.common import build, build_callbacks

    on = build_callbacks(compose("train", [], tmp_path, data_dir))
    cfg = compose("train", ["trainer.enable_progress_bar=false"], tmp_path, data_dir)
    off = build_callbacks(cfg)
    assert any(isinstance(cb, ProgressBar) for cb in on)
    assert not any(isinstance(cb, ProgressBar) for cb in off)
    assert len(off) == len(on) - 1 and any(isinstance(cb, ModelCheckpoint) for cb in off)
    trainer = build(cfg.trainer, "trainer", callbacks=off, logger=False)
    assert isinstance(trainer, Trainer) and trainer.progress_bar_callback is None
