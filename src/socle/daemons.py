"""Daemons Socle runs itself: supervised children, and masters adopted from a pid file.

:class:`Supervised` runs one daemon (Prometheus, Alertmanager) as a child of the control
plane, started as an argument list (never a shell), its output appended to an owner-only
log file. A watcher task waits for it; if it dies while it should run, it is started again
after a backoff that doubles up to ``max_backoff`` (reset once it stayed up for a minute),
and every restart is counted.

Its PID is written to ``pid_file``: a control plane killed with ``kill -9`` leaves its
daemon behind, holding the port and the data folder's lock, so the next start stops the
recorded PID first (:func:`stop_stale`) -- only if that process still runs the same
executable with the same config file (a recycled PID is left alone). A daemon that forks
away from the control plane on purpose (nginx, which outlives it) is found the same way
(:func:`recorded_pid`) and stopped with :func:`stop_pid`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from socle.fs import open_private_append, write_private
from socle.tasks import TaskGroup, within

log = logging.getLogger(__name__)

STOP_GRACE = 10.0


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty: gone, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def recorded_pid(pid_file: Path, matches: Callable[[list[str]], bool]) -> int | None:
    """The PID in ``pid_file`` if that process runs and its command line ``matches`` (a
    recycled PID, another program's, is None)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    argv = cmdline(pid)
    return pid if argv and matches(argv) else None


def stop_pid(pid: int, sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    """Send ``sig``, wait up to ``grace`` seconds for ``pid`` to go, then SIGKILL it
    (blocking: call it through ``asyncio.to_thread`` from the loop)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and cmdline(pid):
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_stale(pid_file: Path, executable: str, marker: str) -> bool:
    """Stop a daemon left by an earlier control plane (see the module docstring)."""

    def ours(argv: list[str]) -> bool:
        return Path(argv[0]).name == Path(executable).name and marker in " ".join(argv)

    pid = recorded_pid(pid_file, ours)
    if pid is None:
        return False
    stop_pid(pid)
    return True


class Supervised:
    """A daemon kept running until :meth:`stop` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log_file: Path,
        pid_file: Path,
        tasks: TaskGroup,
        ready: Callable[[], Awaitable[bool]] | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.name = name
        self.argv = argv
        self._log_file = log_file
        self._pid_file = pid_file
        self._tasks = tasks
        self._ready = ready
        self._max_backoff = max_backoff
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self.last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def _spawn(self) -> asyncio.subprocess.Process:
        fd = await asyncio.to_thread(open_private_append, self._log_file)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,  # a Ctrl-C on the control plane's terminal is ours
                umask=0o077,  # what the daemon writes (TSDB, silences) stays owner-only too
            )
        finally:
            os.close(fd)
        await asyncio.to_thread(write_private, self._pid_file, f"{proc.pid}\n")
        self.started_at = time.time()
        return proc

    async def start(self, *, timeout: float = 30.0) -> None:
        """Start the daemon and wait until ``ready`` says so (or it exits: an error)."""
        self._stopping = False
        proc = await self._spawn()
        self._proc = proc
        if self._ready is not None:
            deadline = time.monotonic() + timeout
            while not await self._ready():
                if proc.returncode is not None or time.monotonic() > deadline:
                    code = proc.returncode
                    if code is None:
                        await self._terminate(proc)
                    tail = await asyncio.to_thread(self.log_tail)
                    raise RuntimeError(
                        f"{self.name} did not become ready (exit {code}); its log ends:\n{tail}"
                    )
                await asyncio.sleep(0.1)
        self._watcher = self._tasks.spawn(self._watch(), f"{self.name}/watch")

    def log_tail(self, size: int = 2000) -> str:
        try:
            data = self._log_file.read_bytes()
        except OSError:
            return ""
        return data[-size:].decode(errors="replace")

    async def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            self.last_exit = code
            up_for = time.time() - (self.started_at or time.time())
            if up_for > 60:
                backoff = 1.0
            log.error("%s exited with %s; restarting in %.0fs", self.name, code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
            if self._stopping:
                return
            self._proc = await self._spawn()
            self.restarts += 1

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await within(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        self._stopping = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        proc, self._proc = self._proc, None
        if proc is not None:
            await self._terminate(proc)
        with contextlib.suppress(FileNotFoundError):
            self._pid_file.unlink()

    def to_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
        }


__all__ = ["Supervised", "cmdline", "recorded_pid", "stop_pid", "stop_stale"]
