"""Running one build step as a real subprocess, without blocking the event loop.

Each step is its own session (process group), so a timeout or a cancelled build can kill
everything the step started, compilers and test servers included, with one signal. Output
(stdout and stderr merged, in order) goes line by line to a sink; the caller decides where
lines end up (log file, last-lines buffer, listeners).

A step is as hostile as the app it builds: with a ``confine`` callback (the runtime's
:class:`socle.runtime.driver.BuildSandbox`) it runs in the app's sandbox, as the app's uid,
with the release folder as the only writable host path. The sandbox dies with the step's
session leader (bubblewrap ``--die-with-parent``), and with it every process inside, so
"kill the group" still means "kill everything the step started".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from socle.errors import BuildError, SocleError
from socle.runtime.driver import ConfinedCommand

Confine = Callable[[list[str]], ConfinedCommand | None]
"""Wraps a resolved step argv into the app's sandbox; None runs it as a plain process."""

DRAIN_SECONDS = 2.0
"""After a step exits, how long to wait for output still in the pipe before giving up.

A step that leaves a daemon holding the pipe open (escaped from its process group with
``setsid``) would otherwise hang the build forever.
"""
_LINE_MAX = 1 << 16


@dataclass(frozen=True)
class StepOutcome:
    exit_code: int | None
    """None when the step was killed for running past its timeout."""
    seconds: float


def resolve_program(program: str, cwd: Path, path: str) -> str:
    """Absolute path of ``program``, the way the manifest author means it.

    A name with a slash is a path: absolute as written, relative from the release folder
    (``.venv/bin/pip`` made by an earlier step). A bare name is looked up on ``path``.
    """
    if "/" in program:
        candidate = program if os.path.isabs(program) else os.path.join(cwd, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        where = (
            "as written"
            if os.path.isabs(program)
            else f"in the release folder {cwd} (relative paths are taken from the copy of "
            "the workdir; an earlier build step must create it)"
        )
        raise BuildError(
            f"program {program!r} not found or not executable: looked for {candidate} {where}"
        )
    found = shutil.which(program, path=path)
    if found is None:
        raise BuildError(
            f"program {program!r} not found on the build PATH ({path})",
            hint="install it on the host, use an absolute path, or set PATH in the step's env",
        )
    return found


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_step(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    sink: Callable[[str], None],
    confine: Confine | None = None,
) -> StepOutcome:
    """Run ``argv`` in ``cwd`` with exactly ``env``; stdin is /dev/null.

    On timeout (``timeout`` <= 0 means none) the whole process group is killed and
    ``exit_code`` is None. On cancellation too, and the cancellation propagates. Whatever
    happens, no process of the step's group outlives this call.
    """
    program = resolve_program(argv[0], cwd, env.get("PATH", os.defpath))
    command, run_env, run_cwd = [program, *argv[1:]], dict(env), cwd
    fds: tuple[int, ...] = ()
    confined: ConfinedCommand | None = None
    if confine is not None:
        try:
            confined = await asyncio.to_thread(confine, command)
        except SocleError as exc:
            raise BuildError(f"cannot sandbox the step: {exc.message}", hint=exc.hint) from exc
        if confined is not None:
            command, run_env, run_cwd = confined.argv, confined.env, Path("/")
            fds = confined.pass_fds
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _StepProtocol(loop, sink),
            *command,
            cwd=run_cwd,
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=fds,
        )
    except OSError as exc:
        raise BuildError(f"cannot start {program}: {exc.strerror}") from exc
    finally:
        if confined is not None:
            confined.close()
    group = transport.get_pid()
    exit_code: int | None
    try:
        try:
            async with asyncio.timeout(timeout if timeout > 0 else None):
                await asyncio.shield(protocol.exited)
            exit_code = transport.get_returncode()
        except TimeoutError:
            _kill_group(group)
            await asyncio.shield(protocol.exited)
            exit_code = None
        # Children left behind by a finished step are not part of the build.
        _kill_group(group)
        done, _ = await asyncio.wait({protocol.closed}, timeout=DRAIN_SECONDS)
        if not done:
            sink("[socle] output still open after the step exited; stopped reading")
    finally:
        if transport.get_returncode() is None:
            _kill_group(group)
            await asyncio.shield(protocol.exited)
        _kill_group(group)
        transport.close()
    return StepOutcome(exit_code, time.monotonic() - started)


class _StepProtocol(asyncio.SubprocessProtocol):
    """Lines to ``sink``; futures for "the step exited" and "its output is closed".

    Not ``Process.wait()``: on Python 3.11 it also waits for the pipes to close, so a
    background child holding stdout would make a finished step look like it still runs.
    Over-long lines are cut in pieces; invalid UTF-8 is replaced.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: Callable[[str], None]) -> None:
        self.sink = sink
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._pending = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        if len(self._pending) > _LINE_MAX:
            lines.append(self._pending)
            self._pending = b""
        for line in lines:
            self._emit(line)

    def _emit(self, line: bytes) -> None:
        self.sink(line.decode("utf-8", "replace").rstrip("\r"))

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = b""
        self.process_exited()
        if not self.closed.done():
            self.closed.set_result(None)
