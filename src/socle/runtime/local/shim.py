"""Per-instance shim: the small parent that keeps an app's output and exit code.

Run as ``python -I -S shim.py --log=... --status=... [options] -- PROGRAM ARGS...`` by the
local driver, in its own session. The shim (like conmon or containerd-shim) exists so that
apps outlive the control plane: the control plane holds no pipe of the app, so it can be
stopped, killed or upgraded while the shim keeps draining the app's stdout/stderr into
rotated JSON-lines log files, and still records the exit code for the next control plane.

It is stdlib-only and imports as little as possible (no json, no subprocess, no argparse)
because one shim runs per instance and its resident memory is paid 200 times.

Options (all ``--name=value``; ``--cgroup`` may repeat):

``--log``        log file; lines ``{"t": epoch, "s": "stdout"|"stderr", "m": text}``
``--status``     exit status file, written atomically when the child is gone
``--max-bytes``  rotate the log when it would grow past this size
``--backups``    rotated files kept (``.1`` newest ... ``.N`` oldest)
``--notify-fd``  write ``ok <child pid>`` or ``err <reason>`` there once exec is done
``--cgroup``     cgroup directory the child joins before exec (so the app starts inside)
``--rlimit-as``  RLIMIT_AS for the child, in bytes (used when there is no cgroup)
``--chdir``      working directory of the child
``--sandbox``    the child is bubblewrap: forward signals to what runs inside it, not to
                 bubblewrap's own monitor process (which would die and orphan the app)
``--seccomp``    a compiled syscall filter: opened in the child (inheritable) and its
                 descriptor number put where the command says ``{seccomp-fd}``, for
                 bubblewrap's ``--seccomp FD`` (each start reads the file anew)
"""

from __future__ import annotations

import os
import select
import sys
import time

# The C encoder of the json package, used alone: escaping without importing json (and re).
from _json import encode_basestring as _quote

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs ~1 MB per shim
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
else:  # the C module: ``signal`` would pull in enum, functools... (~1 MB per shim)
    import _signal as signal

SECCOMP_FD_ARG = "{seccomp-fd}"
"""Placeholder in the command for the descriptor of the ``--seccomp`` file."""
MAX_LINE = 16384
"""A line longer than this is cut into several log lines (keeps memory bounded)."""


class Log:
    """An append-only JSON-lines file with size rotation (file, file.1 ... file.N)."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fd = -1
        self.size = 0
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        os.close(self.fd)
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._open()

    def write_lines(self, stream: str, lines: list[bytes]) -> None:
        """Append lines, rotating so that a file passes ``max_bytes`` only if a single
        line is larger than that; one write() per file touched (followers see whole lines)."""
        if not lines:
            return
        head = f'{{"t": {time.time():.6f}, "s": "{stream}", "m": '
        batch: list[bytes] = []
        size = self.size
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip("\r")
            entry = f"{head}{_quote(text)}}}\n".encode()
            if size > 0 and size + len(entry) > self.max_bytes:
                self._write(b"".join(batch))
                batch = []
                self._rotate()
                size = 0
            batch.append(entry)
            size += len(entry)
        self._write(b"".join(batch))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)


class Stream:
    """One output pipe of the child, cut into lines."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.pending = b""

    def feed(self, data: bytes, *, final: bool = False) -> list[bytes]:
        buf = self.pending + data
        lines = buf.split(b"\n")
        self.pending = lines.pop()
        while len(self.pending) > MAX_LINE:
            lines.append(self.pending[:MAX_LINE])
            self.pending = self.pending[MAX_LINE:]
        if final and self.pending:
            lines.append(self.pending)
            self.pending = b""
        return lines


def parse_args(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``--name=value`` options up to ``--``, then the command."""
    opts: dict[str, list[str]] = {}
    for index, arg in enumerate(argv):
        if arg == "--":
            return opts, argv[index + 1 :]
        name, _, value = arg.partition("=")
        opts.setdefault(name.lstrip("-"), []).append(value)
    return opts, []


def write_status(path: str, code: int, sig: int | None, error: str | None) -> None:
    """Atomically (tmp + rename): the driver must never read half a status."""
    body = (
        f'{{"code": {code}, "signal": {"null" if sig is None else sig}, '
        f'"t": {time.time():.6f}, "error": {"null" if error is None else _quote(error)}}}\n'
    )
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body.encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def quiet(call: Callable[..., object], *args: int) -> None:
    """Call, ignoring OSError (the process may be gone); contextlib costs memory here."""
    try:  # noqa: SIM105 - see docstring
        call(*args)
    except OSError:
        pass


def notify(fd: int, message: str) -> None:
    """Tell the control plane how the start went; it may be gone, which is fine."""
    if fd < 0:
        return
    try:  # noqa: SIM105 - no contextlib in the shim
        os.write(fd, message.encode("utf-8", "replace") + b"\n")
    except OSError:
        pass
    quiet(os.close, fd)


def sandbox_targets(child: int) -> list[int]:
    """Host pids of the processes bubblewrap runs (its pid-namespace init, then the app)."""
    try:
        with open(f"/proc/{child}/task/{child}/children") as handle:
            return [int(pid) for pid in handle.read().split()]
    except (OSError, ValueError):
        return []


class Shim:
    def __init__(self, opts: dict[str, list[str]], command: list[str]) -> None:
        self.opts = opts
        self.command = command
        self.log = Log(
            self._one("log"),
            int(self._one("max-bytes", "10485760")),
            int(self._one("backups", "3")),
        )
        self.status_path = self._one("status")
        self.notify_fd = int(self._one("notify-fd", "-1"))
        self.cgroups = [c for c in opts.get("cgroup", []) if c]
        self.sandbox = "sandbox" in opts
        self.child = 0
        self.pending = 0

    def _one(self, name: str, default: str | None = None) -> str:
        values = self.opts.get(name)
        if values:
            return values[-1]
        if default is None:
            raise SystemExit(f"socle-shim: missing --{name}")
        return default

    def forward(self, signum: int, _frame: object = None) -> None:
        """Pass SIGTERM/SIGINT to the app (its whole group, or whole cgroup), not to us."""
        if not self.child:
            self.pending = signum  # arrived before the fork: forwarded right after it
            return
        if not self.sandbox:
            quiet(os.killpg, self.child, signum)
            return
        # bubblewrap's monitor would die of the signal and leave the app behind: signal
        # the group led by the namespace's init instead (init ignores it, the app does not),
        # and anything else in the instance's cgroup.
        for pid in sandbox_targets(self.child):
            quiet(lambda p: os.killpg(os.getpgid(p), signum), pid)
        for pid in self._cgroup_pids():
            if pid != self.child:
                quiet(os.kill, pid, signum)

    def _cgroup_pids(self) -> list[int]:
        if not self.cgroups:
            return []
        try:
            with open(os.path.join(self.cgroups[0], "cgroup.procs")) as handle:
                return [int(pid) for pid in handle.read().split()]
        except (OSError, ValueError):
            return []

    def _child_setup(self, out_w: int, err_w: int, errpipe: int) -> None:
        """Runs in the forked child, before exec: never returns."""
        step = "reset signals"
        try:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(signum, signal.SIG_DFL)
            os.setpgid(0, 0)
            step = "join cgroup"
            for directory in self.cgroups:
                with open(os.path.join(directory, "cgroup.procs"), "w") as handle:
                    handle.write(str(os.getpid()))
            step = "set RLIMIT_AS"
            limit = self.opts.get("rlimit-as")
            if limit and limit[-1]:
                import resource

                resource.setrlimit(resource.RLIMIT_AS, (int(limit[-1]), int(limit[-1])))
            step = "enter workdir"
            chdir = self.opts.get("chdir")
            if chdir and chdir[-1]:
                os.chdir(chdir[-1])
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            if self.notify_fd > 2:
                os.close(self.notify_fd)
            command = self.command
            filter_path = self.opts.get("seccomp")
            if filter_path and filter_path[-1]:
                step = "open the syscall filter"
                fd = os.open(filter_path[-1], os.O_RDONLY)
                os.set_inheritable(fd, True)
                command = [str(fd) if arg == SECCOMP_FD_ARG else arg for arg in command]
            step = f"execute {command[0]!r}"
            os.execve(command[0], command, os.environ)  # noqa: S606 - argv list
        except BaseException as exc:  # report anything, then leave
            try:
                os.write(errpipe, f"cannot {step}: {exc}".encode())
            finally:
                os._exit(127)

    def run(self) -> int:
        if not self.command:
            raise SystemExit("socle-shim: no command after --")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.forward)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        errpipe_r, errpipe_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            self._child_setup(out_w, err_w, errpipe_w)
        self.child = pid
        if self.pending:
            self.forward(self.pending)
        for fd in (out_w, err_w, errpipe_w):
            os.close(fd)
        failure = b""
        while chunk := os.read(errpipe_r, 4096):
            failure += chunk
        os.close(errpipe_r)
        if failure:
            reason = failure.decode("utf-8", "replace")
            self.log.write_lines("stderr", [f"socle-shim: {reason}".encode()])
            os.waitpid(pid, 0)
            write_status(self.status_path, 127, None, reason)
            notify(self.notify_fd, f"err {reason}")
            return 0
        notify(self.notify_fd, f"ok {pid}")
        return self._pump(pid, [Stream(out_r, "stdout"), Stream(err_r, "stderr")])

    def _pump(self, pid: int, streams: list[Stream]) -> int:
        """Copy output into the log until the child exits, then record its exit status."""
        pidfd = os.pidfd_open(pid)
        by_fd = {stream.fd: stream for stream in streams}
        status = None
        while status is None:
            ready, _, _ = select.select([*by_fd, pidfd], [], [])
            for fd in ready:
                if fd == pidfd:
                    _, status = os.waitpid(pid, 0)
                    continue
                data = os.read(fd, 65536)
                stream = by_fd[fd]
                self.log.write_lines(stream.name, stream.feed(data, final=not data))
                if not data:
                    os.close(fd)
                    del by_fd[fd]
        # The child is gone: take what is already in the pipes, but do not wait for EOF
        # (a daemonized grandchild may hold them open forever).
        for fd, stream in by_fd.items():
            os.set_blocking(fd, False)
            while True:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    data = b""
                self.log.write_lines(stream.name, stream.feed(data, final=not data))
                if not data:
                    break
            os.close(fd)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            write_status(self.status_path, 128 + sig, sig, None)
        else:
            write_status(self.status_path, os.waitstatus_to_exitcode(status), None, None)
        return 0


def main(argv: list[str]) -> int:
    os.chdir("/")  # hold no folder busy; the child gets its workdir from --chdir
    opts, command = parse_args(argv)
    shim = Shim(opts, command)
    try:
        return shim.run()
    except Exception as exc:  # the log is the only place anyone will look
        shim.log.write_lines("stderr", [f"socle-shim: internal error: {exc!r}".encode()])
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
