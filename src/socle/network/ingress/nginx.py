"""The nginx process Socle runs as its HTTP data plane: start, adopt, check, swap, reload.

nginx runs daemonized from its own prefix (``SOCLE_HOME/ingress``), so it outlives the
control plane like the apps do; a new control plane adopts the master found in the pid file
(when its command line names our configuration) or starts one. The master is watched
through a pidfd (works for processes that are not our children): if it dies it is started
again.

A new configuration is written next to the live one, checked with ``nginx -t -c`` and only
then renamed over it (atomic) and signalled (SIGHUP, nginx's reload). A configuration that
fails the check raises :class:`IngressError` and the working one stays.

All methods block (subprocesses, file I/O): the ingress service calls them through
``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

from socle.daemons import recorded_pid, stop_pid
from socle.errors import SocleError
from socle.fs import private_dir, write_private

log = logging.getLogger("socle.ingress")

NGINX = "/usr/sbin/nginx"
WORKER_USER = "nobody"


_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: ", re.M)


def _clean(output: str) -> str:
    """nginx's messages without their time and pid prefix: the same fault reads the same
    each time (reported once, not at every retry)."""
    return _STAMP.sub(r"[\1] ", output.strip())[-800:]


class IngressError(SocleError):
    """The ingress data plane could not be configured or run."""

    http_status = 503


def worker_user() -> str | None:
    """``"USER GROUP"`` nginx workers run as when Socle is root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(WORKER_USER)
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        return None
    return f"{WORKER_USER} {group}"


class Nginx:
    """One nginx master under ``prefix`` (a folder only the control plane can read)."""

    def __init__(self, prefix: Path, *, binary: str = NGINX, temp: Path | None = None) -> None:
        self.prefix = prefix
        self.binary = binary
        self.conf = prefix / "nginx.conf"
        self.pid_file = prefix / "nginx.pid"
        self.temp = temp if temp is not None else prefix / "tmp"
        self.applied: str | None = None
        """The configuration text nginx runs now (None: not known yet)."""

    # -- files -----------------------------------------------------------------------------

    def prepare_dirs(self) -> None:
        private_dir(self.prefix)
        private_dir(self.prefix / "logs")
        user = worker_user()
        self._temp_dir(user)

    def _temp_dir(self, user: str | None) -> None:
        """The workers' scratch folder: owner-only, owned by the worker user; never a
        symlink or someone else's folder (it may live outside SOCLE_HOME)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.temp, 0o700)
        info = os.lstat(self.temp)
        want_uid = pwd.getpwnam(user.split()[0]).pw_uid if user else os.geteuid()
        if not stat.S_ISDIR(info.st_mode):
            raise IngressError(f"{self.temp} is not a folder", hint="remove it and start again")
        if info.st_uid not in (want_uid, os.geteuid()):
            raise IngressError(
                f"{self.temp} belongs to uid {info.st_uid}",
                hint="remove it; Socle makes it again for the ingress workers",
            )
        if user is not None and info.st_uid != want_uid:
            os.chown(self.temp, want_uid, -1, follow_symlinks=False)
        os.chmod(self.temp, 0o700, follow_symlinks=False)

    # -- process -------------------------------------------------------------------------

    def _argv(self, *extra: str, conf: Path | None = None) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(conf or self.conf), *extra]

    def test(self, text: str) -> None:
        """Check ``text`` with ``nginx -t``; raise IngressError with nginx's message if bad."""
        candidate = self.prefix / "nginx.conf.new"
        write_private(candidate, text)
        result = subprocess.run(
            self._argv("-t", "-q", conf=candidate),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            message = _clean(result.stderr).replace(str(candidate), "nginx.conf")
            raise IngressError(
                f"nginx refused the rendered configuration: {message}",
                hint="the running configuration was kept",
            )

    def pid(self) -> int | None:
        """The live master's pid if it is our nginx (command line names our config)."""

        def ours(argv: list[str]) -> bool:
            text = " ".join(argv)
            return "nginx: master process" in text and str(self.conf) in text

        return recorded_pid(self.pid_file, ours)

    def apply(self, text: str) -> bool:
        """Make nginx run ``text``: test, swap, then reload (or start). False: unchanged."""
        pid = self.pid()
        if pid is not None and self.applied == text:
            return False
        self.test(text)
        os.replace(self.prefix / "nginx.conf.new", self.conf)
        if pid is None:
            self._start()
        else:
            self._reload(pid)
        self.applied = text
        return True

    def _reload(self, pid: int) -> None:
        """SIGHUP, then wait until the master started workers with the new configuration
        (it opens new listeners before that): when this returns, the configuration is live."""
        before = self.workers(pid)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.workers(pid) - before or not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.005)
        log.warning("ingress: nginx (pid %s) did not start new workers after a reload", pid)

    def _start(self) -> None:
        result = subprocess.run(
            self._argv(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise IngressError(
                f"nginx did not start: {_clean(result.stderr)}",
                hint="is another program listening on the ingress ports? "
                "(settings ingress_http / ingress_https)",
            )
        deadline = time.monotonic() + 10
        while self.pid() is None:
            if time.monotonic() > deadline:
                raise IngressError("nginx started but wrote no pid file")
            time.sleep(0.01)
        log.info("ingress: nginx started (pid %s)", self.pid())

    def reopen_logs(self) -> bool:
        """Ask the master to flush and reopen its log files (SIGUSR1, after a rotation)."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
            return True
        return False

    def workers(self, master: int) -> set[int]:
        """Pids of the master's worker processes (children), from /proc."""
        found: set[int] = set()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == master:
                found.add(int(entry.name))
        return found

    def stop(self) -> None:
        """Stop nginx (graceful quit, then kill) and wait for the master to go."""
        pid = self.pid()
        if pid is None:
            return
        stop_pid(pid, signal.SIGQUIT, grace=10)
        self.applied = None
