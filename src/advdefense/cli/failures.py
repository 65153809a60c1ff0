"""A failing job of a multirun never takes the others down, and is reported with its overrides.

* :func:`record_failure` writes ``<job output dir>/failed.json`` (job number, name, overrides,
  error, traceback) atomically; the training runner calls it instead of raising when the job
  is part of a multirun and ``continue_on_error`` is true.
* :class:`FailedJobsReport`, a Hydra callback (``hydra.callbacks.failed_jobs`` in
  conf/hydra/default.yaml), prints a table of the failed jobs at the end of the multirun, writes
  them to ``<sweep dir>/failed_jobs.json`` and makes the command exit with status 1.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from advdefense.cli.common import log, print_table
from advdefense.io import atomic_write_text

FAILED = "failed.json"


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().get("mode") == RunMode.MULTIRUN


def job_info() -> dict[str, Any]:
    """Number, overrides and output folder of the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {"job": hc.job.get("num"), "overrides": list(hc.overrides.task),
            "output_dir": hc.runtime.get("output_dir")}


def record_failure(cfg: DictConfig, exc: BaseException) -> Path:
    """Write ``failed.json`` for the current job into ``cfg.paths.output_dir``; returns it."""
    info = job_info()
    out = Path(cfg.paths.output_dir)
    record = {"job": info.get("job"), "name": str(cfg.get("name")),
              "overrides": info.get("overrides", []), "output_dir": str(out),
              "error": f"{type(exc).__name__}: {exc}",
              "traceback": "".join(traceback.format_exception(exc))}
    path = out / FAILED
    atomic_write_text(path, json.dumps(record, indent=2))
    log.error("job %s (%s) failed: %s; the sweep goes on; details in %s",
              record["job"], " ".join(record["overrides"]), record["error"], path)
    return path


def collect_failures(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``failed.json`` under ``sweep_dir``, ordered by job number."""
    records = []
    for path in Path(sweep_dir).glob(f"*/{FAILED}"):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            records.append({"job": None, "name": path.parent.name, "overrides": [],
                            "error": f"unreadable {path}", "output_dir": str(path.parent)})
    return sorted(records, key=lambda r: (r.get("job") is None, r.get("job") or 0))


class FailedJobsReport(Callback):
    """Hydra callback: after a multirun, list the jobs that failed (and exit with status 1)."""

    def __init__(self, exit_on_failure: bool = True) -> None:
        self.exit_on_failure = exit_on_failure

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = collect_failures(sweep_dir)
        if not failures:
            return
        atomic_write_text(sweep_dir / "failed_jobs.json", json.dumps(
            [{k: v for k, v in r.items() if k != "traceback"} for r in failures], indent=2))
        print_table(f"{len(failures)} failed job(s) of the multirun in {sweep_dir}", [
            {"job": str(r.get("job")), "overrides": " ".join(r.get("overrides", [])),
             "error": str(r.get("error", ""))[:160]} for r in failures])
        log.error("%d job(s) failed: %s", len(failures),
                  "; ".join(f"#{r.get('job')} {' '.join(r.get('overrides', []))}" for r in failures))
        if self.exit_on_failure:
            raise SystemExit(1)
