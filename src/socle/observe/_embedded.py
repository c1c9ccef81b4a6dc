"""What the embedded Prometheus and Alertmanager share: folder, token, auth, process, checks.

Each lives under its own owner-only folder (``home/observe/<daemon>/``) with its config
(``<daemon>.yml``), the bearer token it sends to Socle (``token``), basic auth on its own
HTTP API (``web.yml``, see :mod:`socle.observe._webauth`), its log and its pid file. It runs
as a :class:`~socle.daemons.Supervised` child on a loopback port; one left behind by a
control plane killed with ``kill -9`` is stopped first. A generated config is written next
to the live one, checked with the daemon's own tool, and only then renamed over it
(:func:`replace_checked`): a refused config never replaces a working one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import httpx

from socle.daemons import Supervised, stop_stale
from socle.errors import ObserveError
from socle.fs import private_dir, write_private
from socle.observe._webauth import WebAuth, write_web_auth
from socle.tasks import TaskGroup, within

CHECK_TIMEOUT = 60.0
START_TIMEOUT = 60.0


async def run_check(argv: list[str], timeout: float = CHECK_TIMEOUT) -> tuple[int, str]:
    """Run a config checker (promtool, amtool): its exit code and output (a checker that
    hangs is killed and counts as a refusal)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await within(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 1, f"{argv[0]} timed out after {timeout:g}s"
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def replace_checked(path: Path, text: str, check: Sequence[str] | None) -> str | None:
    """Write ``text`` next to ``path`` (``<name>.new``), check it with ``check`` followed by
    the candidate's path, and rename it over ``path`` if accepted (None: no checker, just
    renamed). A refusal removes the candidate and returns the checker's output."""
    candidate = path.with_name(path.name + ".new")
    await asyncio.to_thread(write_private, candidate, text)
    if check is not None:
        code, out = await run_check([*check, str(candidate)])
        if code != 0:
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
            return out
    await asyncio.to_thread(os.replace, candidate, path)
    return None


class EmbeddedDaemon:
    """One embedded daemon of the control plane (see the module docstring)."""

    daemon: ClassVar[str]
    """Its executable's name, and the stem of its files (``prometheus``)."""
    title: ClassVar[str]
    """How errors name it (``Prometheus``)."""
    start_hint: ClassVar[str]
    """What to check when it does not start; ``{log}`` is replaced by its log file."""

    def __init__(
        self,
        folder: Path,
        *,
        binary: str,
        host: str,
        port: int,
        tasks: TaskGroup,
        client_timeout: float,
    ) -> None:
        self.folder = folder
        self.binary = binary
        self.host = host
        self.port = port
        self._tasks = tasks
        self.config_file = folder / f"{self.daemon}.yml"
        self.token_file = folder / "token"
        self._process: Supervised | None = None
        self._client = httpx.AsyncClient(timeout=client_timeout)
        self.web: WebAuth | None = None
        """Basic auth on its HTTP API (set by :meth:`prepare`)."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _argv(self) -> list[str]:
        """The daemon's command line."""
        raise NotImplementedError

    async def _prepare(self, token: str, folders: Sequence[Path]) -> None:
        """Its folders, the token it sends to Socle (before the first config, which names
        the file) and a new password for its own API."""

        def make() -> WebAuth:
            private_dir(self.folder)
            for folder in folders:
                private_dir(folder)
            write_private(self.token_file, token + "\n")
            return write_web_auth(self.folder)

        self.web = await asyncio.to_thread(make)
        self._client.auth = self.web.pair

    async def _ready(self) -> bool:
        try:
            response = await self._client.get(f"{self.url}/-/ready", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def start(self) -> None:
        pid_file = self.folder / f"{self.daemon}.pid"
        await asyncio.to_thread(stop_stale, pid_file, self.binary, str(self.config_file))
        log_file = self.folder / f"{self.daemon}.log"
        process = Supervised(
            self.daemon,
            self._argv(),
            log_file=log_file,
            pid_file=pid_file,
            tasks=self._tasks,
            ready=self._ready,
        )
        try:
            await process.start(timeout=START_TIMEOUT)
        except RuntimeError as exc:
            raise ObserveError(
                f"the embedded {self.title} did not start: {exc}",
                hint=self.start_hint.format(log=log_file),
            ) from exc
        self._process = process

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await process.stop()
        await self._client.aclose()

    def _process_info(self) -> dict[str, object]:
        return self._process.to_dict() if self._process else {"pid": None}

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, **self._process_info()}


__all__ = ["EmbeddedDaemon", "replace_checked", "run_check"]
