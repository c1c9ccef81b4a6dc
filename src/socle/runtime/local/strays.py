"""Finding, at start, the processes of this home that no record accounts for, and stopping them.

A control plane killed with ``kill -9`` between spawning a shim and writing its pid to the
instance record leaves a shim (and its app) that nothing supervises; the next control plane
would start the same instance again, a duplicate serving on another port forever. So
:class:`LocalDriver` calls :func:`reap` at every start, before it re-adopts anything:
every shim of *this* run folder is either the one its record names (re-adopted) or
stopped, and every cgroup folder of *this* home that no record names is emptied and
removed. Afterwards each process of the home belongs to exactly one recorded instance.

How a process is known to belong to this home, and never to another one started from the
same shell: a shim's command line names its status file, ``--status=<run_dir>/instances/
<id>.exit``, and ``run_dir`` is an absolute path of its own home; a cgroup folder lives
under the home's own parent (``socle-<digest of run_dir>``). Nothing matches on instance
ids or app names, which two homes may well share.

A stray is stopped without letting any part of it escape: SIGSTOP first (a stopped process
cannot fork), then its children, found again once it is stopped, and theirs; then SIGKILL
for all of them. Killing the shim first would hand its children to init, out of reach.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from socle.runtime.local import cgroups, procs
from socle.runtime.local.records import ID_RE, InstanceRecord

log = logging.getLogger(__name__)

STOP_WAIT = 1.0
"""How long to wait for a process to show as stopped before reading its children anyway."""
GONE_WAIT = 5.0
"""How long to wait for killed strays to disappear (so their ports are free again)."""


@dataclass(frozen=True)
class Shim:
    """A shim process of this run folder, found in /proc."""

    proc: procs.ProcRef
    instance: str


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def find_shims(run_dir: Path) -> list[Shim]:
    """Every live shim whose status file lies in ``run_dir/instances`` (blocking).

    A shim's child keeps the shim's command line until it execs; it is part of its
    parent's tree, not a shim of its own, so a match whose parent also matches is skipped.
    """
    prefix = f"--status={run_dir}/instances/".encode()
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        for arg in _cmdline(pid):
            if arg.startswith(prefix) and arg.endswith(b".exit"):
                name = arg[len(prefix) : -len(b".exit")].decode(errors="replace")
                if ID_RE.fullmatch(name):
                    found[pid] = name
                break
            if arg == b"--":
                break
    shims = []
    for pid, name in found.items():
        if _ppid(pid) in found:
            continue
        ref = procs.ProcRef.of(pid)
        if ref is not None:
            shims.append(Shim(ref, name))
    return shims


def _wait_stopped(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        info = procs.stat(pid)
        if info is None or info[0] in ("T", "t", "Z", "X"):
            return
        time.sleep(0.005)


def freeze_tree(root: procs.ProcRef) -> list[procs.ProcRef]:
    """SIGSTOP ``root`` and all its descendants, parents first; returns what was stopped."""
    frozen: list[procs.ProcRef] = []
    todo = [root]
    seen: set[int] = set()
    while todo:
        ref = todo.pop()
        if ref.pid in seen or not ref.alive():
            continue
        seen.add(ref.pid)
        procs.kill(ref.pid, signal.SIGSTOP)
        _wait_stopped(ref.pid, time.monotonic() + STOP_WAIT)
        frozen.append(ref)
        for pid in procs.children(ref.pid):
            child = procs.ProcRef.of(pid)
            if child is not None:
                todo.append(child)
    return frozen


def kill_tree(root: procs.ProcRef) -> list[procs.ProcRef]:
    """Freeze, then SIGKILL, a process and all its descendants; returns them (blocking)."""
    frozen = freeze_tree(root)
    for ref in frozen:
        procs.kill_ref(ref, signal.SIGKILL)
    for ref in frozen:
        with contextlib.suppress(ChildProcessError, OSError):  # ours if an earlier driver
            os.waitpid(ref.pid, os.WNOHANG)  # object of this very process started it
    return frozen


def _wait_gone(refs: Iterable[procs.ProcRef], timeout: float = GONE_WAIT) -> None:
    deadline = time.monotonic() + timeout
    pending = [r for r in refs if r.alive()]
    while pending and time.monotonic() < deadline:
        time.sleep(0.01)
        for ref in pending:
            procs.reap_if_ours(ref)
        pending = [r for r in pending if r.alive()]


def reap(run_dir: Path, records: list[InstanceRecord], cgroup_parents: Iterable[Path]) -> list[str]:
    """Stop every process and cgroup of this home that ``records`` do not account for.

    Blocking: run it in a thread, before re-adopting. Returns one line per thing stopped,
    for the log. A recorded shim that is alive is left alone (it will be re-adopted).
    """
    recorded = {r.shim for r in records if r.shim is not None}
    live_ids = {r.id for r in records if r.shim is not None and r.shim.alive()}
    done: list[str] = []
    killed: list[procs.ProcRef] = []
    for shim in find_shims(run_dir):
        if shim.proc in recorded:
            continue
        tree = kill_tree(shim.proc)
        killed += tree
        done.append(
            f"stopped unrecorded shim {shim.proc.pid} of instance {shim.instance} "
            f"({len(tree)} processes)"
        )
    _wait_gone(killed)  # before the cgroups: a dying process still shows in cgroup.procs
    for base in cgroup_parents:
        try:
            folders = [p for p in base.iterdir() if p.is_dir()]
        except OSError:
            continue
        for folder in folders:
            if folder.name in live_ids:
                continue  # a recorded, running instance: its cgroup is in use
            if not cgroups.empty([str(folder)]):
                count = cgroups.kill_all([str(folder)])
                done.append(f"killed {count} unrecorded processes in cgroup {folder}")
            if not any(r.id == folder.name for r in records):
                cgroups.remove([str(folder)])
    return done
