"""cgroup v1 limits for sandboxed instances: memory, cpu and pids.

Each instance gets ``<controller root>/<parent>/<id>`` in the memory, cpu and pids
hierarchies. The shim's child writes itself into ``cgroup.procs`` before it execs, so the app
starts inside its limits and every process it forks stays there; the cgroup is also the
reliable list of "everything of this instance" when it must be killed.

``parent`` is taken under the control plane's *own* cgroup when relative (the default,
``socle``): a control plane run at the root cgroup gets ``/sys/fs/cgroup/memory/socle/<id>``,
and one placed in a cgroup by a service manager does not move its apps out of it. Pass an
absolute parent (``/socle``) to put instances at the root of each hierarchy instead (then,
under systemd, use ``KillMode=process`` so that stopping the service leaves apps running).
Paths are recorded per instance, so a later control plane finds them wherever it runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "pids")
_LIMIT_FILE = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us", "pids": "pids.max"}
CPU_PERIOD_US = 100_000
DEFAULT_MEMORY = 1024 * 1024 * 1024
"""Memory of an instance whose spec sets none (``resources.memory``): limits by default.
Unlimited, one app could take all of the host's memory and have the kernel's OOM killer
pick the control plane or the database."""
"""Scheduler period for the CFS quota: 100 ms, the kernel's default."""


@dataclass(frozen=True)
class Cgroups:
    """The writable parent folder per available controller."""

    parents: dict[str, Path]

    @property
    def controllers(self) -> list[str]:
        return [c for c in CONTROLLERS if c in self.parents]


def own_cgroup(controller: str, proc_cgroup: str | None = None) -> str | None:
    """This process's path in a v1 hierarchy, from ``/proc/self/cgroup``."""
    text = proc_cgroup
    if text is None:
        try:
            text = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    for line in text.splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return None


def detect(parent: str = "socle") -> Cgroups:
    """Which v1 controllers we can use (mounted, and we may create folders in them)."""
    parents: dict[str, Path] = {}
    for controller in CONTROLLERS:
        mount = CGROUP_ROOT / controller
        if not (mount / "cgroup.procs").exists():
            continue
        if parent.startswith("/"):
            base = mount / parent.lstrip("/")
        else:
            own = own_cgroup(controller)
            if own is None:
                continue
            base = mount / own.lstrip("/") / parent
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if (base / _LIMIT_FILE[controller]).exists():
            parents[controller] = base
    return Cgroups(parents)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def create(
    cgroups: Cgroups,
    instance_id: str,
    *,
    memory: int | None,
    cpu: float | None,
    pids_max: int | None,
) -> list[str]:
    """Make the instance's folders and set its limits; returns the folders (for the record)."""
    dirs: list[str] = []
    for controller, base in cgroups.parents.items():
        path = base / instance_id
        path.mkdir(parents=True, exist_ok=True)  # the parent may have been cleaned away
        dirs.append(str(path))
        if controller == "memory":
            limit = str(memory or DEFAULT_MEMORY)
            _write(path / "memory.limit_in_bytes", limit)
            # With swap, the memory limit alone lets an app swap instead of being killed.
            with contextlib.suppress(OSError):
                _write(path / "memory.memsw.limit_in_bytes", limit)
        elif controller == "cpu":
            _write(path / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            quota = max(1000, int(cpu * CPU_PERIOD_US)) if cpu else -1
            _write(path / "cpu.cfs_quota_us", str(quota))
        elif controller == "pids":
            _write(path / "pids.max", str(pids_max) if pids_max else "max")
    return dirs


def procs(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs")) as handle:
            return [int(pid) for pid in handle.read().split()]
    except (OSError, ValueError):
        return []


def kill_all(dirs: list[str], sig: int = signal.SIGKILL) -> int:
    """Signal every process left in the instance's cgroups; returns how many were found."""
    seen: set[int] = set()
    for directory in dirs:
        for pid in procs(directory):
            if pid not in seen:
                seen.add(pid)
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
    return len(seen)


def empty(dirs: list[str]) -> bool:
    return not any(procs(d) for d in dirs)


def remove(dirs: list[str], *, timeout: float = 2.0) -> bool:
    """Kill what is left and remove the folders; blocking (call it from a thread)."""
    deadline = time.monotonic() + timeout
    remaining = [d for d in dirs if os.path.isdir(d)]
    while remaining:
        kill_all(remaining)
        for directory in list(remaining):
            try:
                os.rmdir(directory)
                remaining.remove(directory)
            except FileNotFoundError:
                remaining.remove(directory)
            except OSError:
                pass
        if not remaining or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return not remaining


def oom_kills(dirs: list[str]) -> int:
    """How many times the OOM killer struck in the instance's memory cgroup."""
    for directory in dirs:
        path = os.path.join(directory, "memory.oom_control")
        try:
            with open(path) as handle:
                for line in handle:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def describe(cgroups: Cgroups) -> str:
    return f"cgroup-v1({','.join(cgroups.controllers)})" if cgroups.parents else ""
