"""Training machinery, independent of the command line: resumable data loading, the resume
callback and checkpoint bookkeeping, and the config digest that names a run's weights.

* :mod:`~advdefense.training.loader`: :class:`ResumableSampler`, :class:`ResumableLoader`.
* :mod:`~advdefense.training.resume`: :class:`ResumeState`, ``last.ckpt`` and its lookup.
* :mod:`~advdefense.training.digest`: :func:`config_digest`.
"""

from advdefense.training.digest import config_digest
from advdefense.training.loader import ResumableLoader, ResumableSampler, resumable_loader
from advdefense.training.resume import ResumeState

__all__ = ["ResumableLoader", "ResumableSampler", "ResumeState", "config_digest",
           "resumable_loader"]
