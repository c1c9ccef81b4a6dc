"""Starting one instance: its environment, its program, and the shim that runs it.

The control plane starts only the shim (``posix_spawn``, own session, stdio on /dev/null,
one notify pipe on fd 3). The shim starts the app and tells us on that pipe whether the
exec worked. Nothing else connects the two, which is what lets the app outlive us.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import py_compile
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from socle.errors import RuntimeDriverError
from socle.runtime.driver import InstanceSpec
from socle.runtime.local import procs

log = logging.getLogger(__name__)

SHIM_SOURCE = Path(__file__).with_name("shim.py")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOTIFY_FD = 3
NOTIFY_TIMEOUT = 10.0


def instance_env(spec: InstanceSpec, ports: dict[str, int]) -> dict[str, str]:
    """A clean environment: nothing of the control plane's own (no SOCLE_TOKEN, no venv).

    Order: base, ``spec.env``, ``spec.secret_env``, then what the driver owns (ids, ports),
    which the app cannot override.
    """
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": str(spec.workdir)}
    env.update(spec.env)
    env.update(spec.secret_env)
    env["SOCLE_APP"] = spec.app
    env["SOCLE_INSTANCE"] = spec.id
    env["SOCLE_RELEASE"] = spec.release
    if spec.ports:
        env["PORT"] = str(ports[spec.ports[0]])
    for name in spec.ports:
        env[f"PORT_{name.upper()}"] = str(ports[name])
    return env


def resolve_program(spec: InstanceSpec, env: dict[str, str]) -> str:
    """Absolute path of the program, or a RuntimeDriverError saying what is missing where."""
    if not spec.command:
        raise RuntimeDriverError(f"instance {spec.id}: empty command")
    if not spec.workdir.is_dir():
        raise RuntimeDriverError(
            f"instance {spec.id}: workdir {spec.workdir} does not exist",
            hint="build the release first, or fix run.workdir in the App manifest",
        )
    program = spec.command[0]
    if "/" in program:
        path = Path(program) if program.startswith("/") else spec.workdir / program
        if not path.is_file():
            raise RuntimeDriverError(
                f"instance {spec.id}: program {program!r} not found: {path} does not exist "
                f"(workdir {spec.workdir})",
                hint="check run.command in the App manifest and that the build created it",
            )
        if not os.access(path, os.X_OK):
            raise RuntimeDriverError(
                f"instance {spec.id}: program {path} is not executable (workdir {spec.workdir})",
                hint=f"chmod +x {path}, or run it through its interpreter",
            )
        return str(path)
    found = shutil.which(program, path=env.get("PATH", BASE_PATH))
    if found is None:
        # A PATH read from a secret is the secret's business: never copy it into a message.
        shown = "(from a secret)" if "PATH" in spec.secret_env else env.get("PATH", BASE_PATH)
        raise RuntimeDriverError(
            f"instance {spec.id}: program {program!r} not found on PATH "
            f"{shown} (workdir {spec.workdir})",
            hint="install it, set PATH in the App's env, or give a path like .venv/bin/python",
        )
    return found


def prepare_shim(run_dir: Path) -> Path:
    """Byte-compile the shim once into run_dir (blocking).

    A .pyc run directly skips compiling the source at every shim start, which saves about
    1 MB of resident memory per shim; on any failure the source is used instead.
    """
    source = SHIM_SOURCE.read_bytes()
    digest = hashlib.sha256(source + sys.version.encode()).hexdigest()[:16]
    target = run_dir / "shim" / f"shim-{digest}.pyc"
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        py_compile.compile(str(SHIM_SOURCE), cfile=str(tmp), doraise=True)
        os.replace(tmp, target)
    except (OSError, py_compile.PyCompileError) as exc:
        log.warning("cannot byte-compile the shim, running its source: %s", exc)
        return SHIM_SOURCE
    return target


@dataclass(frozen=True)
class ShimArgs:
    shim: Path
    log: Path
    status: Path
    max_bytes: int
    backups: int
    cgroups: list[str]
    rlimit_as: int | None
    workdir: Path
    sandbox: bool
    seccomp: Path | None = None

    def argv(self, command: list[str]) -> list[str]:
        argv = [
            sys.executable,
            "-I",  # ignore PYTHON* variables of the app's env: they would change the shim
            "-S",
            str(self.shim),
            f"--log={self.log}",
            f"--status={self.status}",
            f"--max-bytes={self.max_bytes}",
            f"--backups={self.backups}",
            f"--notify-fd={NOTIFY_FD}",
            f"--chdir={self.workdir}",
        ]
        argv += [f"--cgroup={c}" for c in self.cgroups]
        if self.rlimit_as:
            argv.append(f"--rlimit-as={self.rlimit_as}")
        if self.sandbox:
            argv.append("--sandbox")
        if self.seccomp is not None:
            argv.append(f"--seccomp={self.seccomp}")
        return [*argv, "--", *command]


@dataclass
class Spawned:
    """A shim we just started: its pid, a pidfd for it, and the read end of its notify pipe."""

    pid: int
    start: int
    """Start time from /proc (read while the shim is our unreaped child: always there)."""
    pidfd: int
    notify: int
    started: float


def spawn_shim(argv: list[str], env: dict[str, str]) -> Spawned:
    """posix_spawn the shim in a new session (blocking for a moment: call from a thread)."""
    read_end, write_end = os.pipe()
    try:
        if write_end == NOTIFY_FD:  # dup2(3, 3) would keep close-on-exec set
            moved = os.dup(write_end)
            os.close(write_end)
            write_end = moved
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, write_end, NOTIFY_FD),
        ]
        try:
            pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
        except OSError as exc:
            os.close(read_end)
            raise RuntimeDriverError(
                f"cannot start the instance shim ({argv[0]}): {exc}",
                hint="the Python interpreter running the control plane must stay installed",
            ) from exc
        pidfd = os.pidfd_open(pid)
        info = procs.stat(pid)
    finally:
        os.close(write_end)
    start = info[1] if info is not None else 0
    return Spawned(pid=pid, start=start, pidfd=pidfd, notify=read_end, started=time.time())


async def read_notify(fd: int, timeout: float = NOTIFY_TIMEOUT) -> str:
    """The shim's one line about the exec (``ok <pid>`` / ``err <why>``), '' if it died."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    done: asyncio.Future[None] = loop.create_future()
    chunks: list[bytes] = []

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        chunks.append(data)
        if (not data or b"\n" in data) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(timeout):
            await done
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks).decode(errors="replace").strip()


def find_app(child: int, *, sandbox: bool, timeout: float = 2.0) -> procs.ProcRef | None:
    """The app's host process: the child itself, or bubblewrap's grandchild (blocking).

    bubblewrap with ``--unshare-pid`` forks an init (pid 1 inside) which forks the app
    (pid 2 inside); both show up a few milliseconds after bubblewrap starts.
    """
    if not sandbox:
        return procs.ProcRef.of(child)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs.start_time(child) is None:
            return None
        for init in procs.children(child):
            for app in procs.children(init):
                ref = procs.ProcRef.of(app)
                if ref is not None:
                    return ref
        time.sleep(0.003)
    return None
