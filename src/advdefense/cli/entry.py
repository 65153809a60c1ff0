"""What an entry point (``train.py``, ``evaluate.py``) sets before Hydra composes its config.

Hydra's basic sweeper resolves ``hydra.sweep.dir`` before any ``HydraConfig`` exists, so the
paths it interpolates cannot use ``${hydra:runtime.cwd}``. The anchor is an environment variable
instead, set here by the entry point and inherited by every process it starts (joblib workers,
DDP ranks, SLURM jobs submitted from it):

- ``ADVDEFENSE_ROOT``: ``paths.root_dir`` (``data/``, ``models/``, ``logs/`` live under it). The
  folder of the entry point's script, i.e. the repository, unless already set: a run started
  from any folder finds the same ``data/`` and ``models/``.
- ``ADVDEFENSE_RUN_ID``: a short random suffix of the run (and sweep) folder names, so two
  commands started within the same second never share a folder. Child processes inherit it, so
  DDP ranks of one run agree on the folder.

It also installs :func:`advdefense.cli.hints.install_override_hints`, so a key that does not
exist (``defense.eps=0.2``) is answered with the key that does (``defense.attack.eps``).

Only the standard library is imported at module level: this runs before Hydra parses the
command line.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ROOT_ENV = "ADVDEFENSE_ROOT"
RUN_ID_ENV = "ADVDEFENSE_RUN_ID"


def prepare_entry(script: str | os.PathLike[str]) -> None:
    """Set the anchors above for the entry point at ``script`` (pass ``__file__``)."""
    os.environ.setdefault(ROOT_ENV, str(Path(script).resolve().parent))
    os.environ.setdefault(RUN_ID_ENV, secrets.token_hex(3))
    from advdefense.cli.hints import install_override_hints

    install_override_hints()
