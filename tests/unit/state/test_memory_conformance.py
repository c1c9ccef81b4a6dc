"""The state-store conformance suite on the in-memory store, in the fast tier.

The suite is written once (``tests/integration/state/test_store_conformance.py``, where it
also runs on SQLite and a real PostgreSQL); the in-memory store needs no file and no server,
so its run belongs here too. Only the contract tests are taken, not the PostgreSQL-only ones.
"""

from __future__ import annotations

import pytest

from socle.state.registry import default_registry
from tests.integration.state import test_store_conformance as suite

for _name in dir(suite):
    if _name.startswith("test_") and not _name.startswith("test_postgres"):
        globals()[_name] = getattr(suite, _name)

store = suite.store
other_store = suite.other_store


@pytest.fixture
def backend() -> suite.Backend:
    return suite.Backend("memory", "memory://unit", default_registry())
