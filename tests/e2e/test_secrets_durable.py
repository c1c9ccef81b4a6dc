"""An acknowledged secrets write is durable: it survives kill -9, and it was fsynced before
the server answered.

1. Writers hammer KV v2 through a real ``socle server --dev``; as soon as N writes have been
   acknowledged the server is killed with SIGKILL while more writes are in flight. After a
   restart every acknowledged write reads back with its value and version.
2. Power loss cannot be simulated here (no device-mapper in this kernel: no dm-log-writes,
   no dm-flakey), so the ordering that makes a write survive one is checked instead: the
   server runs under the real ``strace``, and for each KV write, between reading the request
   and sending the 200, every write to the SQLite WAL is followed by an fsync/fdatasync of
   the WAL. With ``synchronous=NORMAL`` (no fsync at commit) this check fails.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.socle_fixture import SocleServer

DEV_KEY_FILE = "secrets-dev-unseal.key"
ACKED_BEFORE_KILL = 150
WRITERS = 8


def root_token(server: SocleServer) -> str:
    token: str = json.loads((server.home / DEV_KEY_FILE).read_text())["root_token"]
    return token


def kv_write(client: httpx.Client, server: SocleServer, token: str, path: str, value: str) -> int:
    response = client.post(
        f"{server.url}/v1/secret/data/{path}",
        headers={"X-Vault-Token": token},
        json={"data": {"value": value}},
    )
    response.raise_for_status()
    version: int = response.json()["data"]["version"]
    return version


def test_acknowledged_writes_survive_kill9(tmp_path: Path, socle_env: dict[str, str]) -> None:
    server = SocleServer(home=tmp_path / "home", env=socle_env, args=("--dev",))
    server.start()
    try:
        token = root_token(server)
        acked: dict[str, tuple[str, int]] = {}
        lock = threading.Lock()
        enough = threading.Event()

        def writer(index: int) -> None:
            with httpx.Client(timeout=30) as client:
                n = 0
                while True:
                    path = f"durable/w{index}-{n % 7}"  # several versions per path
                    value = f"{index}-{n}-{secrets.token_hex(4)}"
                    try:
                        version = kv_write(client, server, token, path, value)
                    except httpx.HTTPError:
                        return  # the server was killed under this request
                    with lock:
                        acked[path] = (value, version)
                        total[0] += 1
                        if total[0] >= ACKED_BEFORE_KILL:
                            enough.set()
                    n += 1

        total = [0]
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
        for thread in threads:
            thread.start()
        assert enough.wait(120), "the writers never reached the kill point"
        server.kill9()  # other writes are in flight right now
        with lock:
            snapshot = dict(acked)
        for thread in threads:
            thread.join(60)
        with lock:
            # A write acknowledged between the kill signal and the snapshot still counts.
            snapshot.update(acked)
        assert total[0] >= ACKED_BEFORE_KILL

        server.start()
        token = root_token(server)
        with httpx.Client(timeout=30) as client:
            for path, (value, version) in sorted(snapshot.items()):
                response = client.get(
                    f"{server.url}/v1/secret/data/{path}", headers={"X-Vault-Token": token}
                )
                assert response.status_code == 200, (path, response.text)
                data = response.json()["data"]
                # Never older than acknowledged; newer only by a write in flight at the kill.
                assert data["metadata"]["version"] >= version, (path, data["metadata"])
                if data["metadata"]["version"] == version:
                    assert data["data"] == {"value": value}, path
    finally:
        server.cleanup()


# --- fsync before acknowledgement, seen by strace ----------------------------------------

_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((\d+)<([^>]*)>")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")


@dataclass(frozen=True)
class Call:
    name: str
    fd_path: str
    start: float
    end: float
    text: str


def parse_strace(text: str) -> list[Call]:
    """Syscalls from ``strace -f -y -ttt`` output, unfinished/resumed halves joined."""
    pending: dict[str, tuple[float, str]] = {}
    calls: list[Call] = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        pid, stamp, rest = match.group(1), float(match.group(2)), match.group(3)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (stamp, rest.removesuffix("<unfinished ...>"))
            continue
        resumed = _RESUMED.match(rest)
        start = stamp
        if resumed is not None:
            if pid not in pending:
                continue
            start, head = pending.pop(pid)
            rest = head + resumed.group(2)
        call = _CALL.match(rest)
        if call is not None:
            calls.append(Call(call.group(1), call.group(3), start, stamp, rest))
    return calls


def unsynced_acks(calls: list[Call], marker: str) -> tuple[int, list[str]]:
    """(requests seen, those whose response went out before the WAL writes were fsynced)."""
    requests: dict[str, tuple[float, str]] = {}
    seen = 0
    bad: list[str] = []
    wal_writes = [c.end for c in calls if c.fd_path.endswith("-wal") and "write" in c.name]
    wal_syncs = [
        c.end
        for c in calls
        if c.fd_path.endswith("-wal") and c.name in ("fsync", "fdatasync") and "= 0" in c.text
    ]
    for call in calls:
        if not call.fd_path.startswith("socket:"):
            continue
        request = re.search(rf"POST /v1/secret/data/({marker}\d+) ", call.text)
        if call.name in ("recvfrom", "read", "recvmsg") and request is not None:
            requests[call.fd_path] = (call.end, request.group(1))
        elif call.name in ("writev", "write", "sendto", "sendmsg") and "HTTP/1.1 200" in call.text:
            if call.fd_path not in requests:
                continue
            received, name = requests.pop(call.fd_path)
            seen += 1
            writes = [t for t in wal_writes if received <= t <= call.start]
            if not writes:
                bad.append(f"{name}: no WAL write between request and response")
                continue
            if not any(writes[-1] <= t <= call.start for t in wal_syncs):
                bad.append(f"{name}: answered before the WAL was fsynced")
    return seen, bad


def test_each_acknowledged_write_follows_a_wal_fsync(
    tmp_path: Path, socle_env: dict[str, str]
) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    trace = tmp_path / "trace.txt"
    syscalls = "fsync,fdatasync,pwrite64,write,writev,sendto,sendmsg,recvfrom,read,recvmsg"
    wrapper = (strace, "-f", "-y", "-ttt", "-s", "160", "-o", str(trace), "-e", syscalls)
    server = SocleServer(home=tmp_path / "home", env=socle_env, args=("--dev",), wrapper=wrapper)
    server.start()
    marker = "fsynced-" + secrets.token_hex(3) + "-"
    count = 25
    try:
        token = root_token(server)
        with httpx.Client(timeout=60) as client:
            for i in range(count):
                kv_write(client, server, token, f"{marker}{i}", secrets.token_hex(8))
    finally:
        server.cleanup()
    seen, bad = unsynced_acks(parse_strace(trace.read_text(errors="replace")), marker)
    assert seen == count, f"matched {seen} of {count} request/response pairs in the trace"
    assert bad == []
