"""Health checks: the probes (http, tcp, exec) and the threshold bookkeeping.

The bookkeeping (:class:`HealthTracker`) is pure: results and times in, "became ready" or
"became unhealthy" out, so it is tested without processes. Until the first success after a
start, the driver probes every 25 ms (http, tcp) or 100 ms (exec) instead of every
``interval`` (a restarted instance is back in rotation within a few hundred ms); failures in
that phase count at most once per ``interval``, so a slow starter is not declared unhealthy
faster than configured.

Probes are deliberately cheap, because 200 instances probed every 2 s is 100 probes a
second: http is a bare non-blocking socket writing one ``GET`` and reading the status line (no
HTTP client, no TLS), tcp is a bare connect. exec runs the command in a sandbox identical
to the instance's (its uid, filesystem view, read-only release, syscall filter, fixed
``HOME``; see :meth:`socle.runtime.local.instance.Instance.confine_check`), with the
instance's environment and a timeout: the check is as hostile as the app it checks, and an
app must never be able to turn its check into something that runs with more privilege.
Only without a sandbox (isolation "none") does it run as a plain process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from socle.model.app import HealthSpec
from socle.runtime.driver import ConfinedCommand
from socle.runtime.local.ports import HOST

Confine = Callable[[list[str]], ConfinedCommand | None]
"""Wraps an exec check's argv into the instance's sandbox (None: run it plainly)."""
FAST_INTERVAL = 0.1
"""Before the first success: exec checks (a sandbox each) every 100 ms..."""
FAST_NET_INTERVAL = 0.025
"""...and http/tcp probes (a refused connect costs microseconds) every 25 ms, so a booted
app is seen ready within 25 ms instead of up to 100 (starts are bounded, so only a few
instances are ever in this phase at once)."""
FIRST_PROBE = 0.025


class HealthEvent(Enum):
    READY = "ready"
    UNHEALTHY = "unhealthy"


class HealthTracker:
    """Consecutive passes/failures against the thresholds of one process's lifetime."""

    def __init__(self, spec: HealthSpec, started: float) -> None:
        self.spec = spec
        self.started = started
        self.seen_success = False
        self.ready = False
        self.passes = 0
        self.failures = 0
        self.last_counted: float | None = None
        self.last_reason = ""

    def next_delay(self) -> float:
        if self.seen_success:
            return self.spec.interval
        fast = FAST_INTERVAL if self.spec.exec is not None else FAST_NET_INTERVAL
        return min(fast, self.spec.interval)

    def record(self, reason: str | None, now: float) -> HealthEvent | None:
        """Feed one probe result (None = passed, else why it failed)."""
        if reason is None:
            self.seen_success = True
            self.failures = 0
            self.passes += 1
            if not self.ready and self.passes >= self.spec.success_threshold:
                self.ready = True
                return HealthEvent.READY
            return None
        self.passes = 0
        self.last_reason = reason
        if now - self.started < self.spec.start_grace:
            return None
        if (
            not self.seen_success
            and self.last_counted is not None
            and now - self.last_counted < self.spec.interval
        ):
            return None
        self.last_counted = now
        self.failures += 1
        if self.failures >= self.spec.failure_threshold:
            self.ready = False
            self.failures = 0
            return HealthEvent.UNHEALTHY
        return None


def _status_of(head: bytes) -> str | None:
    line = head.split(b"\n", 1)[0]
    parts = line.split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        code = int(parts[1])
        return None if 200 <= code < 400 else f"http status {code}"
    if not head:
        return "connection closed before a response"
    return f"not an HTTP response: {line[:40]!r}"


async def http_probe(port: int, path: str, timeout: float, host: str = HOST) -> str | None:
    """GET over a bare non-blocking socket; only the status line is read.

    The loop's sock_* calls cost about half of a transport/protocol pair per probe, which
    matters at 100 probes a second.
    """
    loop = asyncio.get_running_loop()
    request = (
        f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
        "User-Agent: socle-health\r\nConnection: close\r\n\r\n"
    ).encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    head = b""
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, request)
            while b"\n" not in head and len(head) < 64:
                chunk = await loop.sock_recv(sock, 256)
                if not chunk:
                    break
                head += chunk
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    finally:
        sock.close()
    return _status_of(head)


async def tcp_probe(port: int, timeout: float, host: str = HOST) -> str | None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
    except TimeoutError:
        return f"connect to {host}:{port} timed out after {timeout:g}s"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    finally:
        sock.close()
    return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _start_check(
    argv: list[str], cwd: Path, env: dict[str, str], confine: Confine | None
) -> subprocess.Popen[bytes]:
    """Start the check (blocking): confined when the instance is, else plainly."""
    confined = confine(argv) if confine is not None else None
    if confined is None:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        return subprocess.Popen(
            confined.argv,
            cwd="/",
            env=confined.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=confined.pass_fds,
        )
    finally:
        confined.close()


async def exec_probe(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    confine: Confine | None = None,
) -> str | None:
    """Run the check command; exit 0 passes. Watched by pidfd, no thread per check."""
    try:
        proc = await asyncio.to_thread(_start_check, argv, cwd, env, confine)
    except OSError as exc:
        return f"cannot run {argv[0]!r}: {exc}"
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    pidfd = os.pidfd_open(proc.pid)
    loop.add_reader(pidfd, _resolve, exited)
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await exited
    except TimeoutError:
        timed_out = True
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if proc.poll() is None:  # timed out or cancelled: the check's whole group goes
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()  # SIGKILLed a moment ago: returns at once
    if timed_out:
        return f"{argv[0]} did not finish within {timeout:g}s"
    return None if proc.returncode == 0 else f"{argv[0]} exited with code {proc.returncode}"


async def probe(
    spec: HealthSpec,
    *,
    ports: dict[str, int],
    cwd: Path,
    env: dict[str, str],
    confine: Confine | None = None,
    host: str = HOST,
) -> str | None:
    """Run the one probe the spec names; None if it passed, else why not. ``host``: the
    instance's address (its veth address when it has its own network namespace)."""
    if spec.http is not None:
        return await http_probe(ports[spec.http.port], spec.http.path, spec.timeout, host)
    if spec.tcp is not None:
        return await tcp_probe(ports[spec.tcp.port], spec.timeout, host)
    if spec.exec is not None:
        return await exec_probe(
            list(spec.exec.command), cwd=cwd, env=env, timeout=spec.timeout, confine=confine
        )
    return None
