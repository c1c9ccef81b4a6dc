"""Scripted CLI sessions, one module per area; each module exports ``SESSIONS``.

To add an area: write ``sessions/AREA.py`` with ``SESSIONS = [Session(...), ...]`` and list
it here. To add a session: a few ``bao(...)`` steps in the area's list.
"""

from __future__ import annotations

from tests.integration.secrets.bao_cli.harness import Session
from tests.integration.secrets.bao_cli.sessions import (
    basics,
    database,
    engines,
    generic,
    kv,
    operator,
    tokens,
)

ALL_SESSIONS: list[Session] = [
    *basics.SESSIONS,
    *kv.SESSIONS,
    *generic.SESSIONS,
    *tokens.SESSIONS,
    *engines.SESSIONS,
    *operator.SESSIONS,
    *database.SESSIONS,
]
