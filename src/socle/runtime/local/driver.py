"""The local runtime driver: runs, supervises and heals app instances on this host.

The embedded default of Socle's run layer, in the spirit of a kubelet with
containerd-shims: one small shim process per instance owns the app's output and exit code,
so the control plane can stop, crash or upgrade without stopping apps, and a new
:class:`LocalDriver` on the same ``run_dir`` re-adopts them on :meth:`start`.

Layout on disk::

    run_dir/instances/<id>.json   record (no secret values), mode 0600
    run_dir/instances/<id>.exit   exit status written by the shim
    run_dir/shim/shim-<hash>.pyc  the byte-compiled shim
    logs_dir/<id>.log[.N]         JSON-lines output, rotated by size (kept after stop)

Costs at rest: one pidfd reader per instance and, for instances with a health check, one
timer per probe interval. Nothing polls.

Crash ordering: the record of a new shim is written right after it is spawned, so a
control plane killed in between leaves a shim no record names. :meth:`LocalDriver.start`
therefore first stops every process and cgroup of this home that the records do not
account for (:mod:`.strays`), then re-adopts the recorded ones: after any ``kill -9``,
each process of the home is supervised again or gone, never running twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any

from socle.errors import RuntimeDriverError, StartRefused
from socle.fs import try_lock
from socle.runtime.driver import (
    ConfinedCommand,
    InstanceId,
    InstanceResources,
    InstanceSpec,
    InstanceStatus,
    Isolation,
    LogLine,
    StatusListener,
)
from socle.runtime.local import procs, spawn, strays
from socle.runtime.local.backoff import BackoffPolicy
from socle.runtime.local.health import exec_probe
from socle.runtime.local.instance import Host, Instance
from socle.runtime.local.isolation import (
    MODES,
    NAMESPACES,
    HostIsolation,
    check_mounts,
    detect,
    scratch_size,
)
from socle.runtime.local.logs import stream_logs
from socle.runtime.local.netns import BridgeNetwork
from socle.runtime.local.ports import PortAllocator
from socle.runtime.local.records import (
    InstanceRecord,
    RecordStore,
    check_id,
    spec_from_json,
    spec_to_json,
)
from socle.runtime.local.sandbox import (
    SYSTEM_PATH,
    Profile,
    program_roots,
    sandbox_env,
    visible_system,
)
from socle.tasks import TaskMonitor

log = logging.getLogger(__name__)
PRLIMIT = "/usr/bin/prlimit"


def _check_spec(spec: InstanceSpec) -> None:
    """What the App model validates, checked again for callers building specs by hand."""
    check_mounts(spec.id, spec.mounts)
    for folder in {spec.release_root or spec.workdir, spec.workdir}:
        for mount in spec.mounts:
            if Path(mount.target) == folder or folder in Path(mount.target).parents:
                # Made by bubblewrap (root) through the release's own symlinks, which the
                # app's build steps wrote: the same escape as a mount inside a volume.
                raise RuntimeDriverError(
                    f"instance {spec.id}: mount target {mount.target!r} lies inside the "
                    f"release folder {folder}",
                    hint="mount volumes at a folder of their own, e.g. /data",
                )
    if len(set(spec.ports)) != len(spec.ports):
        raise RuntimeDriverError(f"instance {spec.id}: a port name appears twice: {spec.ports}")
    port = spec.health.port_name if spec.health else None
    if port is not None and port not in spec.ports:
        raise RuntimeDriverError(
            f"instance {spec.id}: the health check uses port {port!r}, which is not in "
            f"its ports ({', '.join(spec.ports) or 'none'})"
        )


def default_cgroup_parent(run_dir: Path) -> str:
    """``socle-<12 hex digits of the run folder's path>``: one cgroup subtree per home."""
    return "socle-" + hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]


class LocalDriver:
    """Runs each instance as real processes on this host (see the module docstring)."""

    name = "local"

    def __init__(
        self,
        run_dir: Path,
        logs_dir: Path,
        *,
        log_max_bytes: int = 10 * 2**20,
        log_backups: int = 3,
        isolation: str = "auto",
        backoff: BackoffPolicy | None = None,
        cgroup_parent: str | None = None,
        pids_max: int | None = 4096,
        tasks: TaskMonitor | None = None,
        max_parallel_starts: int | None = None,
        network: BridgeNetwork | None = None,
    ) -> None:
        """``isolation``: "auto" (sandbox when possible), "sandbox" (or fail), "none".

        ``backoff`` and ``cgroup_parent`` have production defaults; tests pass a faster
        backoff. The default cgroup parent is unique per run folder (``socle-<digest>``), so
        that two homes started from one shell never share (or clean up) each other's cgroups.
        ``pids_max`` caps processes+threads per sandboxed instance. ``tasks`` collects the
        failures of the driver's background tasks (the server passes its monitor).
        ``max_parallel_starts`` bounds how many instances start at once (default twice the
        cores): a start is a burst of CPU (bubblewrap, an interpreter importing its app),
        and 100 at once on two cores starved every one of them past its health deadline.
        ``network``: run every instance in its own network namespace on this bridge (root
        only; see :mod:`.netns`); None: instances share the host's network.
        """
        if isolation not in MODES:
            raise RuntimeDriverError(
                f"unknown isolation mode {isolation!r}", hint=f"use one of {', '.join(MODES)}"
            )
        if log_max_bytes < 1024 or log_backups < 0:
            raise RuntimeDriverError(
                "log_max_bytes must be at least 1024 and log_backups not negative"
            )
        # Absolute: shims and records outlive the current directory of this process.
        self.run_dir = Path(run_dir).absolute()
        self.logs_dir = Path(logs_dir).absolute()
        self._requested = isolation
        self._log_max_bytes = log_max_bytes
        self._log_backups = log_backups
        self._backoff = backoff or BackoffPolicy()
        self._cgroup_parent = cgroup_parent or default_cgroup_parent(self.run_dir)
        self._pids_max = pids_max
        self._records = RecordStore(self.run_dir)
        self._ports = PortAllocator()
        self._instances: dict[str, Instance] = {}
        self._listeners: list[StatusListener] = []
        self._last_emitted: dict[str, tuple[object, ...]] = {}
        self._tasks = (tasks if tasks is not None else TaskMonitor()).group("runtime")
        self._host: Host | None = None
        self._closed = False
        self._lock_fd: int | None = None
        self._bridge_fd: int | None = None
        """Held while this driver supervises instances on the bridge (one per bridge)."""
        starts = max_parallel_starts or 2 * (os.cpu_count() or 1)
        if starts < 1:
            raise RuntimeDriverError("max_parallel_starts must be at least 1")
        self.max_parallel_starts = starts
        self._start_slots = asyncio.Semaphore(starts)
        self.network = network

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Decide isolation, then re-adopt (or restart) every recorded instance."""
        if self._host is not None:
            return
        shim = await asyncio.to_thread(self._prepare_dirs)
        try:
            isolation = await asyncio.to_thread(
                detect,
                self._requested,
                cgroup_parent=self._cgroup_parent,
                run_dir=self.run_dir,
                netns=self.network is not None,
            )
        except BaseException:
            self._unlock_run_dir()
            raise
        self._host = Host(
            run_dir=self.run_dir,
            logs_dir=self.logs_dir,
            records=self._records,
            isolation=isolation,
            backoff=self._backoff,
            shim=shim,
            log_max_bytes=self._log_max_bytes,
            log_backups=self._log_backups,
            pids_max=self._pids_max,
            emit=self._emit,
            spawn_task=self._spawn_task,
            start_slots=self._start_slots,
            network=self.network,
        )
        if isolation.info.warning:
            log.warning("runtime isolation: %s", isolation.info.warning)
        records = await asyncio.to_thread(self._records.load_all)
        parents = list(isolation.cgroups.parents.values())
        for line in await asyncio.to_thread(strays.reap, self.run_dir, records, parents):
            log.warning("%s", line)
        if self.network is not None:
            try:
                self._bridge_fd = await asyncio.to_thread(self.network.hold)
                await asyncio.to_thread(self.network.ensure_bridge)
            except BaseException:
                self._unlock_run_dir()
                raise
            keep = {str(r.id) for r in records}
            for line in await asyncio.to_thread(self.network.sweep, keep):
                log.warning("%s", line)
        for record in records:
            self._adopt(self._host, record)

    def _prepare_dirs(self) -> Path:
        for directory in (self.run_dir, self.logs_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_run_dir()
        self._records.ensure()
        return spawn.prepare_shim(self.run_dir)

    def _lock_run_dir(self) -> None:
        """One supervisor per run_dir: two would both adopt, and restart, every instance.

        An flock dies with its holder, so a killed control plane never leaves it stale.
        """
        fd = try_lock(self.run_dir / "driver.lock")
        if fd is None:
            raise RuntimeDriverError(
                f"another control plane is already supervising {self.run_dir}",
                hint="stop it first, or give this one another run folder",
            )
        self._lock_fd = fd

    def _unlock_run_dir(self) -> None:
        for fd in (self._lock_fd, self._bridge_fd):
            if fd is not None:
                os.close(fd)  # releases the flock
        self._lock_fd = self._bridge_fd = None

    def _adopt(self, host: Host, record: InstanceRecord) -> None:
        try:
            spec = spec_from_json(record.spec)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("instance record %s is unusable, left alone: %s", record.id, exc)
            return
        instance = Instance(host, spec, record)
        self._instances[spec.id] = instance
        self._ports.reserve(record.ports)
        if instance.adopt():
            log.info("re-adopted instance %s (shim pid %s)", spec.id, record.shim)
        else:
            log.info("instance %s exited while no control plane ran", spec.id)
            self._spawn_task(instance.handle_exit())

    async def close(self, *, stop_instances: bool) -> None:
        """Stop supervising; with ``stop_instances`` stop every instance first."""
        if stop_instances:
            await asyncio.gather(*(self.stop(InstanceId(i)) for i in list(self._instances)))
        for instance in list(self._instances.values()):
            async with instance.lock:
                instance.detach()
        self._instances.clear()
        await self._tasks.close()
        self._closed = True
        self._unlock_run_dir()

    # -- instances ------------------------------------------------------------------------

    def _require_host(self) -> Host:
        if self._host is None or self._closed:
            raise RuntimeDriverError(
                "the local runtime driver is not started",
                hint="await driver.start() first (and do not use it after close())",
            )
        return self._host

    async def run(self, spec: InstanceSpec) -> InstanceStatus:
        host = self._require_host()
        try:
            check_id(spec.id)
            _check_spec(spec)
        except RuntimeDriverError as exc:  # no instance can be made of this spec
            raise StartRefused(exc.message, hint=exc.hint) from exc
        known = self._instances.get(spec.id)
        if known is not None:
            if sorted(spec.ports) != sorted(known.record.ports):
                raise RuntimeDriverError(
                    f"instance {spec.id} already runs with ports "
                    f"{', '.join(known.record.ports) or 'none'}; it cannot change them",
                    hint="ports belong to an instance: start a new instance id instead",
                )
            known.refresh(spec)
            return known.status()
        ports = self._ports.allocate(list(spec.ports))
        record = InstanceRecord(
            spec=spec_to_json(spec),
            ports=ports,
            isolation=host.isolation.instance_detail,
            sandbox=host.isolation.sandbox,
        )
        instance = Instance(host, spec, record)
        self._instances[spec.id] = instance
        try:
            await instance.start_bounded(first=True)  # a failure is a state, not an error
        except BaseException:
            await self._forget(instance)
            raise
        return instance.status()

    async def stop(self, instance_id: InstanceId) -> None:
        instance = self._instances.get(instance_id)
        if instance is None:
            return
        try:
            await instance.stop()
        finally:
            self._instances.pop(instance_id, None)
            self._ports.release(instance.record.ports)
            self._last_emitted.pop(instance_id, None)

    async def _forget(self, instance: Instance) -> None:
        instance.stopping = True
        self._instances.pop(instance.id, None)
        self._ports.release(instance.record.ports)
        if instance.running:
            await instance.terminate(0.0)
        await asyncio.to_thread(instance._cleanup)

    def instances(self) -> list[InstanceStatus]:
        return [instance.status() for instance in self._instances.values()]

    def replace(self, instance_id: InstanceId, reason: str) -> bool:
        """Restart one instance on request (a remediation), per its restart policy;
        False if it is unknown or not running now."""
        instance = self._instances.get(instance_id)
        return instance is not None and instance.replace(reason)

    def app_uid(self, app: str) -> int | None:
        """The uid ``app``'s instances run as (blocking: may write the ledger); None when
        they run as the control plane's own uid (not root, or not sandboxed)."""
        host = self._host
        if host is None or not host.isolation.sandbox:
            return None
        return host.isolation.uid_of(app)

    def signal(self, instance_id: InstanceId, name: str) -> bool:
        """Send signal ``name`` (``SIGHUP``) to the instance's app process (a config
        reload); False if it is unknown or not running now."""
        instance = self._instances.get(instance_id)
        if instance is None or not instance.running:
            return False
        sig = getattr(signal, name, None)
        if not isinstance(sig, signal.Signals) or name.startswith("SIG_"):
            raise RuntimeDriverError(f"unknown signal {name!r}")
        ref = instance.record.app
        return ref is not None and ref.alive() and procs.kill(ref.pid, sig)

    async def run_in(self, instance_id: InstanceId, argv: list[str], timeout: float) -> str | None:
        """Run ``argv`` in a running instance's sandbox, as the app (same uid, view,
        filter and environment as its exec checks); None if it exited 0, else why not."""
        instance = self._instances.get(instance_id)
        if instance is None or instance.status().pid is None:
            return "instance is not running"
        return await exec_probe(
            list(argv),
            cwd=instance.spec.workdir,
            env=dict(instance.env),
            timeout=timeout,
            confine=instance.confine_check,
        )

    def resources(self) -> list[InstanceResources]:
        """Each instance with its cgroup folders and last health probe (the exporter's
        input; see :class:`socle.runtime.driver.ResourceSource`)."""
        found = []
        for instance in self._instances.values():
            prober = instance.prober
            found.append(
                InstanceResources(
                    status=instance.status(),
                    cgroups=tuple(instance.record.cgroups),
                    health_seconds=prober.last_seconds if prober else None,
                    health_ok=prober.last_ok if prober else None,
                )
            )
        return found

    def subscribe(self, listener: StatusListener) -> None:
        self._listeners.append(listener)

    async def logs(
        self, instance_id: InstanceId, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[LogLine]:
        iid = check_id(instance_id)
        async for line in stream_logs(self.logs_dir, iid, since=since, follow=follow):
            yield line

    def build_sandbox(self) -> LocalBuildSandbox:
        """What the release store confines build steps with (see :class:`LocalBuildSandbox`)."""
        return LocalBuildSandbox(self)

    def ports_in_use(self) -> frozenset[int]:
        """The loopback ports handed to instances (bound by the apps, or about to be)."""
        return self._ports.in_use()

    def isolation(self) -> Isolation:
        if self._host is not None:
            return self._host.isolation.info
        # Before start() nothing was probed: say what we expect, plainly marked as such.
        if self._requested != "none" and os.geteuid() == 0 and shutil.which("bwrap"):
            return Isolation("namespaces+cgroups", NAMESPACES, "not verified until start()")
        return Isolation("rlimits", "plain processes", "not verified until start()")

    # -- plumbing -------------------------------------------------------------------------

    def _emit(self, instance: Instance) -> None:
        """Tell listeners about a change of state, readiness, pid or restart count."""
        status = instance.status()
        key = (status.state, status.ready, status.pid, status.restarts, status.last_exit_code)
        if self._last_emitted.get(status.id) == key:
            return
        self._last_emitted[status.id] = key
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                log.exception("runtime status listener failed")

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro, getattr(coro, "__qualname__", "task"))


class LocalBuildSandbox:
    """:class:`socle.runtime.driver.BuildSandbox` for this host: build steps in the app's
    sandbox (same uid, view and filter as its instances), with the release being built as
    the only writable host folder, the host network (package installs), a throwaway
    ``HOME``, and ``RLIMIT_AS``/``RLIMIT_NPROC`` through ``prlimit`` (util-linux)."""

    def __init__(self, driver: LocalDriver) -> None:
        self._driver = driver

    def _isolation(self) -> HostIsolation | None:
        host = self._driver._host
        if host is None:
            raise RuntimeDriverError(
                "the local runtime driver is not started: cannot sandbox a build",
                hint="start the driver before building releases",
            )
        return host.isolation if host.isolation.sandbox else None

    def prepare(self, app: str, release_root: Path) -> None:
        iso = self._isolation()
        uid = iso.uid_of(app) if iso is not None else None
        if uid is None:
            return
        # Folders searchable by others too (0711): bwrap enters the working folder as root
        # after dropping its capabilities, so an owner-only folder of the app's uid (the
        # server's umask is 077) would shut it out. They sit in releases/, which is 0700.
        for dirpath, dirnames, filenames in os.walk(release_root):
            for name in dirnames:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    os.chmod(path, os.lstat(path).st_mode & 0o7777 | 0o711)  # noqa: S103
            for name in [*dirnames, *filenames]:
                os.lchown(os.path.join(dirpath, name), uid, uid)
        os.chmod(release_root, os.lstat(release_root).st_mode & 0o7777 | 0o711)  # noqa: S103
        os.chown(release_root, uid, uid)

    def search_path(self, path: str) -> str:
        if self._isolation() is None:
            return path
        shown = [entry for entry in path.split(os.pathsep) if entry and visible_system(entry)]
        return os.pathsep.join(shown) or SYSTEM_PATH

    def wrap(
        self,
        app: str,
        argv: list[str],
        *,
        release_root: Path,
        cwd: Path,
        env: Mapping[str, str],
        memory: int | None,
    ) -> ConfinedCommand | None:
        iso = self._isolation()
        if iso is None or iso.seccomp is None:
            return None
        limits = [PRLIMIT, "--nproc=4096"]
        if memory:
            limits.append(f"--as={memory}")
        fd = os.open(iso.seccomp, os.O_RDONLY)
        try:
            profile = Profile(
                command=[*limits, "--", *argv],
                workdir=cwd,
                release_root=release_root,
                hostname=f"build-{app}"[:63],
                uid=iso.uid_of(app),
                seccomp_fd=fd,
                writable_release=True,
                die_with_parent=True,
                extra_ro=tuple(program_roots(argv[0], hidden_ok=[release_root])),
                tmp_size=scratch_size(memory),
            )
            return ConfinedCommand(iso.argv(profile), sandbox_env(dict(env)), (fd,))
        except BaseException:
            os.close(fd)
            raise
