"""The root tests/conftest.py's helpers under a unique module name.

``from conftest import ...`` is ambiguous once another test folder (tests/attacks) has its own
conftest.py: whichever was imported last owns the name ``conftest``. Loading the root file by
path gives the CLI tests the right ``ROOT``, ``TINY``, ``TINY_MEMBER`` and ``compose``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "advdefense_tests_root_conftest"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).parents[1] / "conftest.py")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)
_root = sys.modules[_NAME]

ROOT, TINY, TINY_MEMBER, compose = _root.ROOT, _root.TINY, _root.TINY_MEMBER, _root.compose
