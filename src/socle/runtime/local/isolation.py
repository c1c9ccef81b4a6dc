"""What isolation this host allows, and the bubblewrap command line that gives it.

As root with bubblewrap: every instance gets its own PID, mount, IPC and UTS namespaces
(``--unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try``), all capabilities
dropped, and cgroup v1 limits (memory, cpu, pids). The network namespace is *shared*, on
purpose: apps listen on the host's 127.0.0.1 where ingress and health checks reach them.

Filesystem view inside the sandbox:

* the host root read-only (``--ro-bind / /``): programs, interpreters and venvs are found
  where they are on the host;
* the release root read-write (``--bind``): apps own their release folder, as a container
  owns its writable layer, and state they write there survives restarts;
* a private ``/tmp`` (tmpfs), a minimal ``/dev``, the namespace's own ``/proc``;
* the driver's run and logs folders hidden behind empty tmpfs mounts, so an app cannot
  read other instances' logs or records.

Without root or bubblewrap (or with ``isolation="none"``) instances are plain processes in
their own session, with RLIMIT_AS standing in for the memory limit, and the driver says so
in ``Isolation.warning``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from socle.errors import RuntimeDriverError
from socle.runtime.driver import Isolation
from socle.runtime.local import cgroups
from socle.runtime.local.cgroups import Cgroups

MODES = ("auto", "sandbox", "none")
NAMESPACES = "namespaces(pid,mount,ipc,uts)"
PLAIN_DETAIL = "plain processes in their own session; memory capped by RLIMIT_AS"
PLAIN_WARNING = (
    "instances are not sandboxed: they run as plain processes of the control plane's user, "
    "see the host's processes and files, and their memory is capped only by RLIMIT_AS "
    "(virtual memory, not resident memory); cpu limits are not enforced"
)


@dataclass(frozen=True)
class HostIsolation:
    """The driver's decision, made once at ``start()``."""

    info: Isolation
    sandbox: bool
    bwrap: str | None = None
    cgroups: Cgroups = field(default_factory=lambda: Cgroups({}))

    @property
    def instance_detail(self) -> str:
        return self.info.detail


def plain(reason: str | None = None) -> HostIsolation:
    warning = PLAIN_WARNING if reason is None else f"{reason}: {PLAIN_WARNING}"
    return HostIsolation(Isolation(mode="rlimits", detail=PLAIN_DETAIL, warning=warning), False)


def _hidden_program_root(program: Path, tmp: Path) -> Path | None:
    """The folder to show read-only when the program lives under the private /tmp.

    A venv interpreter (``/tmp/x/.venv/bin/python``) needs its whole venv, so a program in a
    ``bin`` folder brings that folder's parent; any other brings its own folder.
    """
    if not program.is_absolute() or tmp not in program.parents:
        return None
    root = program.parent.parent if program.parent.name == "bin" else program.parent
    return root if root != tmp else program.parent if program.parent != tmp else None


def bwrap_argv(
    bwrap: str,
    command: list[str],
    *,
    workdir: Path,
    release_root: Path,
    hostname: str,
    hidden: list[Path],
) -> list[str]:
    """The bubblewrap invocation for one instance (argv list, never a shell string).

    No ``--die-with-parent``: the app must outlive its supervisors.
    """
    tmp = Path("/tmp")  # noqa: S108 - the sandbox's own /tmp, a fresh tmpfs
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", str(tmp)]
    for path in hidden:
        if path.is_dir() and tmp not in path.parents and path != tmp:
            argv += ["--tmpfs", str(path)]
    program_root = _hidden_program_root(Path(command[0]), tmp)
    if program_root is not None:
        argv += ["--ro-bind", str(program_root), str(program_root)]
    argv += ["--bind", str(release_root), str(release_root)]
    if workdir != release_root and release_root not in workdir.parents:
        argv += ["--bind", str(workdir), str(workdir)]
    argv += [
        "--chdir",
        str(workdir),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        hostname[:63],
        "--new-session",
        "--cap-drop",
        "ALL",
        "--",
        *command,
    ]
    return argv


def _probe_bwrap(bwrap: str) -> str | None:
    """Run a trivial sandbox once; None if it works, else what bubblewrap said."""
    true = shutil.which("true") or "/bin/true"
    argv = bwrap_argv(
        bwrap, [true], workdir=Path("/"), release_root=Path("/"), hostname="probe", hidden=[]
    )
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
    return None


def detect(requested: str, *, cgroup_parent: str = "socle") -> HostIsolation:
    """Decide the isolation mode; blocking (runs bubblewrap once), call from a thread."""
    if requested not in MODES:
        raise RuntimeDriverError(
            f"unknown isolation mode {requested!r}", hint=f"use one of {', '.join(MODES)}"
        )
    if requested == "none":
        return plain("isolation='none' was asked for")
    problem: str | None = None
    bwrap = shutil.which("bwrap")
    if os.geteuid() != 0:
        problem = "the control plane is not running as root"
    elif bwrap is None:
        problem = "bubblewrap (bwrap) is not installed"
    else:
        failure = _probe_bwrap(bwrap)
        if failure is not None:
            problem = f"bubblewrap cannot create namespaces here: {failure}"
    if problem is not None or bwrap is None:
        if requested == "sandbox":
            raise RuntimeDriverError(
                f"sandbox isolation is not available: {problem}",
                hint="run as root with bubblewrap installed (apt-get install bubblewrap), "
                "or use isolation='auto' or 'none'",
            )
        return plain(f"no sandbox because {problem}")
    groups = cgroups.detect(cgroup_parent)
    warning = None
    if groups.parents:
        detail = f"{NAMESPACES}+{cgroups.describe(groups)}"
        mode = "namespaces+cgroups"
        missing = [c for c in cgroups.CONTROLLERS if c not in groups.parents]
        if missing:
            warning = f"cgroup controllers not available: {', '.join(missing)}; not limited"
    else:
        detail = NAMESPACES
        mode = "namespaces"
        warning = "no usable cgroup v1 controllers: memory, cpu and pids are not limited"
    return HostIsolation(Isolation(mode, detail, warning), True, bwrap, groups)
