"""The per-instance exporter: usage of every instance read from cgroups and ``/proc``.

Apps change nothing to be measured: Socle knows each instance's cgroup folders and process
ids (:class:`socle.runtime.driver.InstanceResources`) and reads

- memory: ``memory.usage_in_bytes`` and ``memory.limit_in_bytes`` of its memory cgroup (v1),
  or the resident size (``VmRSS``) of its processes without cgroups;
- CPU seconds: ``utime + stime`` (plus the reaped children's ``cutime + cstime``) of every
  process in its cgroup, from ``/proc/<pid>/stat`` (the host has no per-instance cpuacct);
- open files: entries of ``/proc/<pid>/fd`` of every process;
- restarts, readiness, the last health probe's latency and result, from the runtime.

Labels: ``app``, ``env``, ``instance``, ``release``. Reads are a few small sysfs/procfs files
per instance; the collector runs in a thread (``asyncio.to_thread``) at scrape time so the
event loop never waits on it. Folders are parameters, so tests use a fake tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from socle.runtime.driver import InstanceResources

LABELS = ("app", "env", "instance", "release")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Usage:
    """What was read for one instance (None: could not be read)."""

    cpu_seconds: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    open_fds: int | None
    processes: int


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cgroup_pids(cgroups: Iterable[str]) -> list[int] | None:
    """Processes of the instance, from the first cgroup folder that lists them."""
    for folder in cgroups:
        try:
            text = (Path(folder) / "cgroup.procs").read_text()
        except OSError:
            continue
        return [int(line) for line in text.split() if line.isdigit()]
    return None


def _cpu_seconds(proc: Path, pid: int) -> float | None:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    try:
        # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    except (ValueError, IndexError):
        return None
    return ticks / CLOCK_TICKS


def _rss_bytes(proc: Path, pid: int) -> int | None:
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return 0  # a zombie or kernel thread has no VmRSS line


def _open_fds(proc: Path, pid: int) -> int | None:
    try:
        return len(os.listdir(proc / str(pid) / "fd"))
    except OSError:
        return None


def _memory_folder(cgroups: Iterable[str]) -> Path | None:
    for folder in cgroups:
        path = Path(folder)
        if (path / "memory.usage_in_bytes").exists():
            return path
    return None


def read_usage(resources: InstanceResources, proc: Path = Path("/proc")) -> Usage:
    """One instance's usage now (blocking file reads: call it in a thread)."""
    pids = _cgroup_pids(resources.cgroups)
    if pids is None:
        pid = resources.status.pid
        pids = [pid] if pid is not None else []
    cpu: float | None = None
    fds: int | None = None
    rss: int | None = None
    for pid in pids:
        seconds = _cpu_seconds(proc, pid)
        if seconds is not None:
            cpu = (cpu or 0.0) + seconds
        count = _open_fds(proc, pid)
        if count is not None:
            fds = (fds or 0) + count
        size = _rss_bytes(proc, pid)
        if size is not None:
            rss = (rss or 0) + size
    memory_folder = _memory_folder(resources.cgroups)
    memory: int | None = rss
    limit: int | None = None
    if memory_folder is not None:
        memory = _read_int(memory_folder / "memory.usage_in_bytes")
        limit = _read_int(memory_folder / "memory.limit_in_bytes")
        if limit is not None and limit >= 2**62:
            limit = None  # "unlimited" is a huge page-rounded number in v1
    return Usage(cpu, memory, limit, fds, len(pids))


class InstanceCollector(Collector):
    """Prometheus collector over a source of :class:`InstanceResources` (read at collect)."""

    def __init__(
        self, source: Callable[[], list[InstanceResources]], proc: Path = Path("/proc")
    ) -> None:
        self._source = source
        self._proc = proc

    def collect(self) -> Iterable[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=LABELS)

        cpu = CounterMetricFamily(
            "socle_instance_cpu_seconds", "CPU time of the instance's processes.", labels=LABELS
        )
        memory = gauge("socle_instance_memory_bytes", "Memory the instance uses (cgroup).")
        limit = gauge("socle_instance_memory_limit_bytes", "The instance's memory limit.")
        fds = gauge("socle_instance_open_fds", "Open file descriptors of its processes.")
        procs = gauge("socle_instance_processes", "Processes in the instance.")
        restarts = CounterMetricFamily(
            "socle_instance_restarts", "Restarts of the instance.", labels=LABELS
        )
        up = gauge("socle_instance_up", "1 when the instance's process is running.")
        ready = gauge("socle_instance_ready", "1 when the instance passes its health check.")
        health_seconds = gauge(
            "socle_instance_health_check_duration_seconds", "Latency of the last health probe."
        )
        health_ok = gauge(
            "socle_instance_health_check_success", "1 if the last health probe passed."
        )
        for item in self._source():
            status = item.status
            labels = [status.app, status.environment, status.id, status.release]
            usage = read_usage(item, self._proc)
            if usage.cpu_seconds is not None:
                cpu.add_metric(labels, usage.cpu_seconds)
            if usage.memory_bytes is not None:
                memory.add_metric(labels, usage.memory_bytes)
            if usage.memory_limit_bytes is not None:
                limit.add_metric(labels, usage.memory_limit_bytes)
            if usage.open_fds is not None:
                fds.add_metric(labels, usage.open_fds)
            procs.add_metric(labels, usage.processes)
            restarts.add_metric(labels, status.restarts)
            up.add_metric(labels, 1.0 if status.pid is not None else 0.0)
            ready.add_metric(labels, 1.0 if status.ready else 0.0)
            if item.health_seconds is not None:
                health_seconds.add_metric(labels, item.health_seconds)
            if item.health_ok is not None:
                health_ok.add_metric(labels, 1.0 if item.health_ok else 0.0)
        yield from (cpu, memory, limit, fds, procs, restarts, up, ready, health_seconds, health_ok)


def instance_exposition(
    source: Callable[[], list[InstanceResources]], proc: Path = Path("/proc")
) -> bytes:
    """The exporter's page (blocking: call it in a thread, with a snapshot as ``source``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InstanceCollector(source, proc))
    return generate_latest(registry)


__all__ = ["InstanceCollector", "Usage", "instance_exposition", "read_usage"]
