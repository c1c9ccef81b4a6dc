"""Notifier deliveries to a real local HTTP receiver: signed bodies, retries with backoff
on 5xx, no retry on 4xx, an unreachable receiver, every delivery recorded."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from socle.gitops.notify import SIGNATURE_HEADER, Notifications, sign
from socle.model.notifier import Notifier
from socle.state.registry import open_store
from socle.tasks import TaskMonitor
from tests.support.ports import free_port


@contextlib.contextmanager
def receiver(
    answers: list[int], tls: ssl.SSLContext | None = None
) -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """An HTTP server (HTTPS with ``tls``) answering ``answers`` in turn (then 200),
    recording each request."""
    seen: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(({k.lower(): v for k, v in self.headers.items()}, data))
            code = answers.pop(0) if answers else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def notifier(name: str, url: str, **spec: Any) -> Notifier:
    return Notifier.model_validate({"apiVersion": "socle/v1", "kind": "Notifier",
                                    "metadata": {"name": name}, "spec": {"url": url, **spec}})  # fmt: skip


def event(kind: str, env: str = "prod") -> dict[str, Any]:
    return {"time": 1.0, "env": env, "source": "platform", "event": kind, "message": "m"}


async def _run(tmp_path: Path, url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    store = await open_store(tmp_path / "state.db")
    tasks = TaskMonitor().group("test")

    async def secret_for(n: Notifier) -> str | None:
        return "hmac-key" if n.spec.secret else None

    notes = Notifications(store, tasks, secret_for, backoff=0.01)
    await notes.start()
    await notes.add(notifier("signed", f"{url}/signed", secret="secret/data/hooks/x",
                             events=["sync failed", "approval given"]))  # fmt: skip
    await notes.add(notifier("slack", f"{url}/slack", format="slack", env="dev"))
    await notes.add(notifier("dead", f"http://127.0.0.1:{free_port()}/x", events=["rollback"]))
    notes.emit(event("sync failed"))  # signed only (slack: dev only)
    notes.emit(event("sync succeeded", env="dev"))  # slack only
    notes.emit(event("rollback"))  # dead + nothing else
    await asyncio.wait_for(notes.drained(), 60)
    first = await notes.deliveries()
    # a restart keeps notifiers and records
    again = Notifications(store, tasks, secret_for, backoff=0.01)
    await again.start()
    assert [n.name for n in again.notifiers()] == ["dead", "signed", "slack"]
    second = await again.deliveries()
    await tasks.close()
    await store.close()
    return first, second


def test_deliveries_are_signed_retried_and_recorded(tmp_path: Path) -> None:
    with receiver([500, 503]) as (url, seen):
        rows, after_restart = asyncio.run(_run(tmp_path, url))
    assert rows == after_restart
    by = {row["notifier"]: row for row in rows}
    assert set(by) == {"signed", "slack", "dead"}
    signed = by["signed"]
    assert signed["delivered"] and signed["attempts"] == 3 and signed["statuses"] == [500, 503, 200]
    assert by["slack"]["delivered"] and by["slack"]["attempts"] == 1
    dead = by["dead"]
    assert not dead["delivered"] and dead["attempts"] == 5 and dead["error"] == "last answer none"
    assert dead["target"].startswith("http://127.0.0.1:") and "/x" not in dead["target"]

    signed_requests = [(h, b) for h, b in seen if json.loads(b).get("event") == "sync failed"]
    assert len(signed_requests) == 3
    headers, payload = signed_requests[-1]
    assert headers[SIGNATURE_HEADER.lower()] == sign("hmac-key", payload)
    assert b"hmac-key" not in payload
    slack = [json.loads(b) for h, b in seen if "text" in json.loads(b)]
    assert slack == [{"text": "[dev] platform: sync succeeded — m"}]
    assert all(SIGNATURE_HEADER.lower() not in h for h, b in seen if b"text" in b)


def test_a_4xx_is_not_retried(tmp_path: Path) -> None:
    async def go(url: str) -> list[dict[str, Any]]:
        store = await open_store(tmp_path / "s.db")
        tasks = TaskMonitor().group("t")

        async def none(_: Notifier) -> str | None:
            return None

        notes = Notifications(store, tasks, none, backoff=0.01)
        await notes.start()
        await notes.add(notifier("n", url))
        notes.emit(event("drift detected"))
        await asyncio.wait_for(notes.drained(), 60)
        rows = await notes.deliveries()
        await tasks.close()
        await store.close()
        return rows

    with receiver([404]) as (url, seen):
        rows = asyncio.run(go(url))
    assert len(seen) == 1 and rows[0]["statuses"] == [404] and not rows[0]["delivered"]


def test_https_deliveries_go_to_the_checked_address_and_verify_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is made to the address the delivery checked (no second lookup), and
    TLS still verifies the certificate against the URL's name, not that address."""
    from socle.gitops.notify import _post
    from tests.support.certs import write_self_signed

    write_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    with receiver([], tls=context) as (url, seen):
        port = int(url.rsplit(":", 1)[1])
        assert _post(f"https://localhost:{port}/x", b"{}", {}) == 0  # not trusted yet
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "c.pem"))
        assert _post(f"https://localhost:{port}/x", b"{}", {}) == 200
        assert _post(f"https://127.0.0.1:{port}/x", b"{}", {}) == 0  # not the cert's name
        assert len(seen) == 1


def test_every_checked_address_is_tried_in_turn() -> None:
    """A name with several addresses (``localhost``: ::1 and 127.0.0.1 on many hosts) is
    reached on the one that answers, as before the addresses were pinned."""
    from socle.gitops.notify import _connect

    with receiver([]) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        # Nothing listens on 127.0.0.2 (the receiver binds 127.0.0.1 only): refused, next.
        with _connect(["127.0.0.2", "127.0.0.1"], port, 5.0) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)
        with pytest.raises(OSError):
            _connect(["127.0.0.2"], port, 5.0)


def test_a_stored_notifier_pointing_at_the_metadata_service_is_refused_not_retried(
    tmp_path: Path,
) -> None:
    """A record written before the URL rules tightened (``2852039166`` is 169.254.169.254)
    is still loaded; its deliveries are refused at resolution, recorded, never retried."""

    async def go() -> list[dict[str, Any]]:
        store = await open_store(tmp_path / "s.db")
        tasks = TaskMonitor().group("t")

        async def no_secret(_: Notifier) -> str | None:
            return None

        old = notifier("old", "http://hooks.example/x")
        stale = old.model_copy(
            update={"spec": old.spec.model_copy(update={"url": "http://2852039166/latest"})}
        )
        notes = Notifications(store, tasks, no_secret, backoff=0.01)
        await notes.start()
        await notes.add(stale)
        notes.emit(event("rollback"))
        await asyncio.wait_for(notes.drained(), 60)
        rows = await notes.deliveries()
        await tasks.close()
        await store.close()
        return rows

    [row] = asyncio.run(go())
    assert not row["delivered"] and row["attempts"] == 0
    assert row["error"].startswith("refused: 2852039166 resolves to 169.254.169.254")
