"""Small /proc and signal helpers that are careful about PID reuse.

A PID alone does not name a process for long: after it exits the number is handed out
again. Together with the start time (field 22 of ``/proc/<pid>/stat``, in clock ticks since
boot) it does, which is how records written by one control plane stay safe to act on for
the next one.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcRef:
    """A process named by PID *and* start time, so that a reused PID is not mistaken for it."""

    pid: int
    start: int

    def alive(self) -> bool:
        return start_time(self.pid) == self.start

    def to_json(self) -> list[int]:
        return [self.pid, self.start]

    @classmethod
    def from_json(cls, value: object) -> ProcRef | None:
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return cls(value[0], value[1])
        return None

    @classmethod
    def of(cls, pid: int) -> ProcRef | None:
        start = start_time(pid)
        return cls(pid, start) if start is not None else None


def stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, zombies included; None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0].decode(), int(fields[19])


def start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, or None if there is no such process."""
    info = stat(pid)
    if info is None or info[0] in ("Z", "X"):
        return None
    return info[1]


def reap_if_ours(ref: ProcRef | None) -> None:
    """Collect a zombie we are the parent of (a shim started by an earlier driver object of
    this same process), making sure by its start time that it is that process."""
    if ref is None:
        return
    info = stat(ref.pid)
    if info is not None and info[0] == "Z" and info[1] == ref.start:
        with contextlib.suppress(ChildProcessError):  # not our child: init collects it
            os.waitpid(ref.pid, os.WNOHANG)


def children(pid: int) -> list[int]:
    """Direct children of a process (needs CONFIG_PROC_CHILDREN, present on common kernels)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except (OSError, ValueError):
        return []


def kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except OSError:
        return False
    return True


def killpg(group: int, sig: int) -> bool:
    try:
        os.killpg(group, sig)
    except OSError:
        return False
    return True


def kill_ref(ref: ProcRef | None, sig: int, *, group: bool = False) -> None:
    """Signal a recorded process (or its process group) only if it is still that process."""
    if ref is None or not ref.alive():
        return
    if group:
        killpg(ref.pid, sig)
    else:
        kill(ref.pid, sig)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
