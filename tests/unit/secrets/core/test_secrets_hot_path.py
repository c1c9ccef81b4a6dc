"""What the request fast path must keep exactly: JSON bytes, audit lines, KV read freshness."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from socle.secrets.backend import SecretsError
from socle.secrets.core._json import dumps
from socle.secrets.core.audit import AuditConfig, AuditEvent, FileDevice
from socle.secrets.core.audit_chain import verify_file
from socle.secrets.core.context import Caller
from socle.secrets.core.fields import rfc3339
from socle.secrets.core.http import _parse_json
from socle.secrets.core.policy import ACL
from socle.secrets.core.tokens import TokenEntry
from socle.secrets.engines.kv_v2 import KVv2Backend
from tests.unit.secrets.engines.enginekit import FakeClock, call, mount
from tests.unit.secrets.engines.memstorage import MemStorage


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [True, None, 1.5, "x"], "c": {"d": ""}},
        {"text": "caf\u00e9 \u2603 \U0001f600", "quote": 'a"b\\c\n'},
        {"big": 2**70, "neg": -(2**65)},
        {1: "int key", "k": (1, 2)},
        {"when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "point": Point(1)},
        {"set": {1}, "bytes": b"raw"},
        [],
        "plain",
    ],
)
def test_dumps_gives_the_standard_library_bytes(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), default=str).encode()
    assert dumps(value, default=str) == expected


def test_nan_and_infinity_are_refused_at_the_input() -> None:
    for body in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}'):
        with pytest.raises(SecretsError) as refused:
            _parse_json(body)
        assert refused.value.status == 400
    assert _parse_json(b'{"a": 1.5e300}') == {"a": 1.5e300}


def _caller() -> Caller:
    entry = TokenEntry(
        id="token-hmac",
        accessor="acc-1",
        policies=["default", "ops"],
        meta={"team": "blue"},
        display_name="token-ci",
        ttl=600,
        creation_time=1_700_000_000.25,
    )
    return Caller(ACL([]), ("default", "ops"), entry, "hvs.secret-token", "token-ci")


def test_audit_lines_are_the_json_of_the_whole_entry(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    device = FileDevice(AuditConfig("file/", "file", "u-1", options={"file_path": str(log)}), b"s")
    device.open()
    h = device.hasher.hash
    request = {
        "id": "req-1",
        "operation": "update",
        "mount_point": "secret/",
        "mount_type": "kv",
        "mount_accessor": "kv_1",
        "client_token": "hvs.secret-token",
        "client_token_accessor": "acc-1",
        "namespace": {"id": "root"},
        "path": "secret/data/caf\u00e9",
        "data": {"data": {"pin": 1234, "word": "caf\u00e9", "ok": True, "none": None}},
        "remote_address": "127.0.0.1",
    }
    response = {"mount_type": "kv", "data": {"version": 3, "deletion_time": ""}, "auth": None}
    auth = {
        "client_token": h("hvs.secret-token"),
        "accessor": h("acc-1"),
        "display_name": "token-ci",
        "policies": ["default", "ops"],
        "token_policies": ["default", "ops"],
        "metadata": {"team": h("blue")},
        "entity_id": "",
        "token_type": "service",
        "token_ttl": 600,
        "token_issue_time": rfc3339(1_700_000_000.25),
    }
    hashed_request = dict(request)
    hashed_request.update(
        client_token=h("hvs.secret-token"),
        client_token_accessor=h("acc-1"),
        data={"data": {"pin": h("1234"), "word": h("caf\u00e9"), "ok": True, "none": None}},
    )
    hashed_response = dict(response, data={"version": h("3"), "deletion_time": h("")})

    for _ in range(2):  # the second event reuses the per-token cache
        event = AuditEvent(_caller(), request)
        first = device.line(b"T1", event, None, "")
        second = device.line(b"T2", event, response, "bad; worse")
        expected_first = {"time": "T1", "type": "request", "auth": auth, "request": hashed_request}
        expected_second = {
            **expected_first,
            "time": "T2",
            "type": "response",
            "response": hashed_response,
            "error": "bad; worse",
        }
        for line, entry in ((first, expected_first), (second, expected_second)):
            assert line + b"}" == json.dumps(entry, separators=(",", ":")).encode()
            device.write(line)
    device.close()
    text = log.read_text()
    assert text.isascii() and "secret-token" not in text and "blue" not in text
    assert verify_file(log).ok and verify_file(log).lines == 4


def test_anonymous_requests_have_an_empty_auth_block(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    device = FileDevice(AuditConfig("file/", "file", "u-1", options={"file_path": str(log)}), b"s")
    request = {"client_token": "", "client_token_accessor": "", "data": None, "path": "x"}
    line = device.line(b"T", AuditEvent(None, request), {}, "permission denied")
    entry = json.loads(line + b"}")
    assert entry["auth"] == {} and entry["response"] == {} and entry["request"] == request


class PausingStorage(MemStorage):
    """Storage whose next read of a version table can be held half-way, after it has read
    the stored value: the shape of a read that races a write."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        value = self.items.get(key)
        hold = self.hold
        if hold is not None and key.startswith("meta/"):
            self.hold = None
            self.held.set()
            await hold.wait()
        return value


async def test_a_read_that_raced_a_write_is_not_cached() -> None:
    storage = PausingStorage()
    kv = KVv2Backend(storage, mount(options={"version": "2"}), clock=FakeClock())
    await call(kv, "create", "data/app", {"data": {"v": "one"}})
    storage.hold = release = asyncio.Event()
    reader = asyncio.create_task(call(kv, "read", "data/app"))
    await storage.held.wait()  # the reader has the old table in hand
    await call(kv, "create", "data/app", {"data": {"v": "two"}})
    release.set()
    raced = await reader
    assert raced.data is not None and raced.data["data"] == {"v": "one"}
    fresh = await call(kv, "read", "data/app")
    assert fresh.data is not None and fresh.data["data"] == {"v": "two"}
    assert fresh.data["metadata"]["version"] == 2


async def test_cached_reads_hand_out_copies() -> None:
    kv = KVv2Backend(MemStorage(), mount(options={"version": "2"}), clock=FakeClock())
    await call(kv, "create", "data/app", {"data": {"v": "one"}})
    await call(kv, "create", "metadata/app", {"custom_metadata": {"owner": "a"}})
    first = await call(kv, "read", "data/app")
    assert first.data is not None
    first.data["metadata"]["custom_metadata"]["owner"] = "changed"
    first.data["metadata"]["version"] = 99
    described = await call(kv, "read", "metadata/app")
    assert described.data is not None
    described.data["custom_metadata"]["owner"] = "changed too"
    second = await call(kv, "read", "data/app")
    assert second.data is not None
    assert second.data["metadata"]["custom_metadata"] == {"owner": "a"}
    assert second.data["metadata"]["version"] == 1
    await call(kv, "delete", "data/app")  # a soft delete is a write: the next read sees it
    deleted = await call(kv, "read", "data/app")
    assert deleted.status == 404 and deleted.data is not None
    assert deleted.data["metadata"]["deletion_time"] != ""
