"""The runtime-driver conformance suite, run for LocalDriver in both isolation modes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# conformance.py is a helper module, not a test module; load it under a unique name so it
# cannot clash with another folder's helper of the same name (tests have no packages).
_NAME = "socle_tests_runtime_conformance"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).with_name("conformance.py")
    )
    assert _spec is not None and _spec.loader is not None
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
conformance = sys.modules[_NAME]


class TestLocalDriver(conformance.RuntimeDriverConformance):  # type: ignore[name-defined,misc]
    """Parametrized by the ``isolation_mode`` fixture: "sandbox" (root + bwrap) and "none"."""
