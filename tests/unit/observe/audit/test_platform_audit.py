"""The platform audit log: chained lines, queries, tampering found, every store write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from socle.errors import ConflictError
from socle.observe.audit import Actor, AuditedStore, AuditQuery, PlatformAudit, acting
from socle.secrets.core.audit_chain import verify_file
from socle.state.memory import MemoryData, MemoryStore
from socle.state.store import Delete, Put


def test_lines_chain_and_survive_a_reopen(tmp_path: Path) -> None:
    audit = PlatformAudit(tmp_path / "a")
    audit.append({"kind": "request", "who": "ci", "path": "/api/v1/apply", "status": 200})
    audit.close()
    again = PlatformAudit(tmp_path / "a")  # a restart chains to the last line on disk
    again.append({"kind": "request", "who": "ops", "path": "/api/v1/status", "status": 200})
    result = again.verify()
    assert result.ok and result.lines == 2
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    assert again.path.stat().st_mode & 0o777 == 0o600
    assert [e["who"] for e in again.entries()] == ["ci", "ops"]


@pytest.mark.parametrize(
    ("mutate", "bad_line"),
    [
        (lambda lines: [lines[0], lines[2]], 2),  # a line removed
        (lambda lines: [lines[1], lines[0], lines[2]], 1),  # reordered
        (lambda lines: [lines[0], lines[1].replace(b'"ci"', b'"ok"'), lines[2]], 2),  # edited
    ],
)
def test_tampering_is_found(tmp_path: Path, mutate: object, bad_line: int) -> None:
    audit = PlatformAudit(tmp_path)
    for who in ("admin", "ci", "ops"):
        audit.append({"kind": "request", "who": who, "path": "/api/v1/x", "status": 200})
    lines = audit.path.read_bytes().splitlines(keepends=True)
    audit.path.write_bytes(b"".join(mutate(lines)))  # type: ignore[operator]
    result = audit.verify()
    assert not result.ok and result.bad_line == bad_line


def test_query_filters(tmp_path: Path) -> None:
    audit = PlatformAudit(tmp_path)
    audit.append({"time": 100.0, "kind": "request", "who": "ci", "path": "/api/v1/apply"})
    audit.append({"time": 200.0, "kind": "change", "who": "ci", "keys": ["+apps/web"]})
    audit.append({"time": 300.0, "kind": "request", "who": "ops", "path": "/api/v1/status"})
    assert len(audit.query(AuditQuery(who="ci"))) == 2
    assert [e["who"] for e in audit.query(AuditQuery(since=250))] == ["ops"]
    assert [e["time"] for e in audit.query(AuditQuery(path="/api/v1/a"))] == [100.0]
    assert [e["time"] for e in audit.query(AuditQuery(path="+apps/"))] == [200.0]
    assert [e["time"] for e in audit.query(AuditQuery(limit=2))] == [200.0, 300.0]
    assert all("hash" not in e for e in audit.query(AuditQuery()))


async def test_every_store_write_is_recorded_with_its_actor(tmp_path: Path) -> None:
    audit = PlatformAudit(tmp_path)
    store = AuditedStore(MemoryStore(MemoryData()), audit)
    await store.put("apps/web", b"secret-value")
    with acting(Actor("ci", "req-1")):
        await store.commit([Put("apps/api", b"x"), Delete("apps/web")])
        with pytest.raises(ConflictError):
            await store.put("apps/api", b"y", expect_version=7)
    assert await store.delete("apps/none") is False  # nothing changed: nothing recorded
    await store.get("apps/api")  # reads are not recorded

    entries = list(audit.entries())
    assert [(e["who"], e["op"], e["keys"], e["result"]) for e in entries] == [
        ("socle", "put", ["apps/web"], "ok"),
        ("ci", "commit", ["+apps/api", "-apps/web"], "ok"),
        ("ci", "put", ["apps/api"], "conflict"),
    ]
    assert entries[1]["request_id"] == "req-1"
    assert b"secret-value" not in audit.path.read_bytes()  # keys only, never values
    assert verify_file(audit.path).ok
    assert json.loads(audit.path.read_bytes().splitlines()[0])["prev_hash"] == ""
