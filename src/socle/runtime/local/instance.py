"""One supervised instance: start, watch, probe, restart, stop.

Every change of an instance goes through :attr:`Instance.lock` (launch, exit handling,
restart, stop), so two of them never interleave; the only thing done outside the lock is
noticing that the shim exited (a pidfd becoming readable), which just resolves a future and
schedules the exit handling.

An instance's processes: ``shim`` (our child, or adopted), ``child`` (what the shim forked:
the app itself, or bubblewrap), ``app`` (the app's host pid; inside bubblewrap it is the
grandchild). Exits are noticed through a pidfd on the shim, in the event loop, with no
polling: the shim outlives the app by the time it takes to write the exit status.

Start failures are states, never retried silently: a spec that can never start
(:func:`preflight` refuses it: program not found, NUL byte, bad env name) makes the instance
``FAILED`` at its first start, with no process, no record and no retry; a failure that may
pass (cgroup setup, spawning the shim, the exec inside the shim, any failed restart)
counts as a crash: ``BACKOFF``, then ``CRASHLOOP``, with the reason in the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socle.errors import RuntimeDriverError, StartRefused
from socle.model.app import HealthSpec
from socle.runtime.driver import ConfinedCommand, InstanceSpec, InstanceState, InstanceStatus
from socle.runtime.local import cgroups, procs, spawn
from socle.runtime.local.backoff import BackoffPolicy
from socle.runtime.local.isolation import (
    HostIsolation,
    prepare_instance,
    remove_scratch,
    scratch_size,
)
from socle.runtime.local.logs import last_line, log_path
from socle.runtime.local.netns import BridgeNetwork, enter_argv
from socle.runtime.local.ports import HOST
from socle.runtime.local.prober import Prober
from socle.runtime.local.records import ExitStatus, InstanceRecord, RecordStore, spec_to_json
from socle.runtime.local.sandbox import Profile, sandbox_env
from socle.runtime.local.shim import SECCOMP_FD_ARG
from socle.tasks import within

log = logging.getLogger(__name__)

KILL_WAIT = 5.0
"""How long to wait for processes to disappear after SIGKILL before giving up on them."""
BOOT_WINDOW = 5.0
"""A start holds its slot (:attr:`Host.start_slots`) until the instance is ready, leaves
``starting``, or this many seconds pass: booting apps (and their fast probes before the
first success) are the CPU burst to bound, not only the exec."""


@dataclass
class Host:
    """What every instance shares: folders, isolation, policies, and the driver's hooks."""

    run_dir: Path
    logs_dir: Path
    records: RecordStore
    isolation: HostIsolation
    backoff: BackoffPolicy
    shim: Path
    log_max_bytes: int
    log_backups: int
    pids_max: int | None
    emit: Callable[[Instance], None]
    spawn_task: Callable[[Coroutine[Any, Any, None]], None]
    start_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))
    """Bounds instance starts (first starts and restarts) running at once."""
    network: BridgeNetwork | None = None
    """Each instance in its own network namespace on this bridge (None: the host's)."""


class Instance:
    def __init__(self, host: Host, spec: InstanceSpec, record: InstanceRecord) -> None:
        self.host = host
        self.spec = spec
        self.record = record
        self.env = self._env(spec)
        self.state = InstanceState.STARTING
        self.ready = False
        self.ready_since: float | None = None
        self.message = ""
        self.lock = asyncio.Lock()
        self.generation = 0
        self.pidfd: int | None = None
        self.exited: asyncio.Future[None] | None = None
        self.stopping = False
        self.detached = False
        self.waiting_for_secrets = False
        self.unhealthy_reason: str | None = None
        self.replace_reason: str | None = None
        """Why a restart was asked from outside (a remediation), until the process exits."""
        self.oom_baseline = 0
        self.prober: Prober | None = None
        self.restart_timer: asyncio.TimerHandle | None = None
        self.settled = asyncio.Event()
        """Set once the current start is over: ready, or no longer ``starting``."""

    @property
    def id(self) -> str:
        return self.spec.id

    def _env(self, spec: InstanceSpec) -> dict[str, str]:
        env = spawn.instance_env(spec, self.record.ports)
        return sandbox_env(env) if self.host.isolation.sandbox else env

    def _profile(self, command: list[str], *, check: bool, seccomp_fd: int | str | None) -> Profile:
        """The instance's sandbox; a check gets an identical one that dies with us."""
        spec = self.spec
        iso = self.host.isolation
        return Profile(
            command=command,
            workdir=spec.workdir,
            release_root=spec.release_root or spec.workdir,
            hostname=spec.id,
            # An instance adopted from an older version has no uid recorded: its checks
            # still run as the app's uid, never as root (blocking: callers are threads).
            uid=self.record.uid if self.record.uid is not None else iso.uid_of(spec.app),
            seccomp_fd=seccomp_fd,
            mounts=list(spec.mounts),
            scratch=self.record.scratch_path,
            die_with_parent=check,
            tmp_size=scratch_size(spec.memory),
        )

    def confine_check(self, argv: list[str]) -> ConfinedCommand | None:
        """An exec check's command inside the app's sandbox (None when not sandboxed):
        same uid, view, filter and HOME as the app, so the app cannot make its check run
        anything with more privilege than itself (blocking: opens the filter)."""
        iso = self.host.isolation
        netns = self.record.netns if self.host.network is not None else None
        if not iso.sandbox or iso.seccomp is None:
            if netns is None:
                return None
            # Not sandboxed, but the check must see what the app sees: its namespace.
            return ConfinedCommand(
                enter_argv(netns, argv, workdir=self.spec.workdir), dict(self.env), ()
            )
        program = argv[0]
        if "/" in program and not program.startswith("/"):
            program = str(self.spec.workdir / program)
        elif "/" not in program:
            program = shutil.which(program, path=self.env.get("PATH", spawn.BASE_PATH)) or program
        fd = os.open(iso.seccomp, os.O_RDONLY)
        profile = self._profile([program, *argv[1:]], check=True, seccomp_fd=fd)
        confined = iso.argv(profile)
        if netns is not None:
            confined = enter_argv(netns, confined)
        return ConfinedCommand(confined, dict(self.env), (fd,))

    @property
    def running(self) -> bool:
        return self.exited is not None and not self.exited.done()

    @property
    def address(self) -> str:
        """Where the instance answers: its veth address in its own network namespace, or
        the host's loopback."""
        return self.record.address or HOST

    def status(self) -> InstanceStatus:
        spec = self.spec
        app = self.record.app
        return InstanceStatus(
            id=spec.id,
            app=spec.app,
            release=spec.release,
            ordinal=spec.ordinal,
            state=self.state,
            ready=self.ready,
            pid=app.pid if app is not None and self.running else None,
            address=self.address,
            ports=dict(self.record.ports),
            restarts=self.record.restarts,
            started_at=self.record.started_at,
            ready_since=self.ready_since,
            last_exit_code=self.record.last_exit_code,
            isolation=self.record.isolation,
            message=self.message,
            uid=self.record.uid,
            environment=spec.environment,
            labels=dict(spec.labels),
        )

    def _set(self, state: InstanceState, message: str | None = None, *, ready: bool) -> None:
        self.state = state
        if message is not None:
            self.message = message
        if ready and not self.ready:
            self.ready_since = time.time()
        self.ready = ready
        if ready or state is not InstanceState.STARTING:
            self.settled.set()
        self.host.emit(self)

    def save(self) -> None:
        """Small atomic write; done inline (it is far below a millisecond).

        A FAILED instance has no record: there is nothing to re-adopt, and the next control
        plane asks for it again (and finds it failing again)."""
        if not self.detached and self.state is not InstanceState.FAILED:
            self.host.records.write(self.record)

    @property
    def missing_secrets(self) -> list[str]:
        return [k for k in self.record.secret_keys if k not in self.spec.secret_env]

    # -- starting -------------------------------------------------------------------------

    async def launch(self) -> None:
        """Start a new shim + app (caller holds the lock).

        Raises :class:`StartRefused` when the spec can never start (nothing was created),
        and ``RuntimeDriverError`` for a failure that may pass. See :meth:`start_or_fail`.
        """
        host = self.host
        spec = self.spec
        self.generation += 1
        self.unhealthy_reason = None
        self.replace_reason = None
        self.env = self._env(spec)
        program = preflight(spec, self.env)
        command = [program, *spec.command[1:]]
        iso = host.isolation
        dirs: list[str] = []
        if iso.sandbox and iso.cgroups.parents:
            try:
                dirs = await asyncio.to_thread(
                    cgroups.create,
                    iso.cgroups,
                    spec.id,
                    memory=spec.memory,
                    cpu=spec.cpu,
                    pids_max=host.pids_max,
                )
            except OSError as exc:
                raise RuntimeDriverError(
                    f"instance {spec.id}: cannot set its cgroup limits: {exc}",
                    hint="check that the cgroup v1 controllers are mounted and writable, "
                    "and that the limits are valid (e.g. memory above what the app uses)",
                ) from exc
            self.oom_baseline = await asyncio.to_thread(cgroups.oom_kills, dirs)
        stale = [d for d in self.record.cgroups if d not in dirs]
        if stale:
            await asyncio.to_thread(cgroups.remove, stale)
        if iso.sandbox:
            uid = await asyncio.to_thread(iso.uid_of, spec.app)
            scratch = await asyncio.to_thread(
                prepare_instance,
                host.run_dir,
                spec.id,
                list(spec.mounts),
                uid,
                scratch_size(spec.memory),
            )
            self.record.uid = uid
            self.record.scratch = str(scratch)
            command = iso.argv(self._profile(command, check=False, seccomp_fd=SECCOMP_FD_ARG))
        if host.network is not None:
            # Kept across restarts (same address: the registry and firewall see no churn).
            netns, address = await asyncio.to_thread(
                host.network.ensure, spec.id, self.record.address
            )
            self.record.netns, self.record.address = netns, address
            command = enter_argv(netns, command)
        args = spawn.ShimArgs(
            shim=host.shim,
            log=log_path(host.logs_dir, spec.id),
            status=host.records.status_path(spec.id),
            max_bytes=host.log_max_bytes,
            backups=host.log_backups,
            cgroups=dirs,
            rlimit_as=None if iso.sandbox and iso.cgroups.parents else spec.memory,
            workdir=spec.workdir,
            sandbox=iso.sandbox,
            seccomp=iso.seccomp if iso.sandbox else None,
        )
        try:
            host.records.clear_status(spec.id)
            spawned = await asyncio.to_thread(spawn.spawn_shim, args.argv(command), self.env)
        except ValueError as exc:  # a NUL byte preflight() did not foresee: same verdict
            raise StartRefused(f"instance {spec.id}: cannot start its shim: {exc}") from exc
        except OSError as exc:
            raise RuntimeDriverError(f"instance {spec.id}: cannot start its shim: {exc}") from exc
        record = self.record
        record.cgroups = dirs
        record.isolation = iso.instance_detail
        record.sandbox = iso.sandbox
        record.shim = procs.ProcRef(spawned.pid, spawned.start)
        record.child = record.app = None
        record.started_at = spawned.started
        self.ready_since = None
        self.watch(spawned.pidfd)
        self.save()  # before anything else can fail: the next control plane must know it
        self._set(InstanceState.STARTING, "starting", ready=False)
        note = await spawn.read_notify(spawned.notify)
        if not note.startswith("ok "):
            if note.startswith("err "):
                self.message = f"could not start: {note[4:]}"
            return  # the exit (or a dead shim) is handled by the pidfd watcher
        child = int(note.split()[1])
        record.child = procs.ProcRef.of(child)
        record.app = await asyncio.to_thread(spawn.find_app, child, sandbox=iso.sandbox)
        self.save()
        if self.running and not self.stopping:
            self._after_start("started")

    async def start_or_fail(self, *, first: bool) -> None:
        """:meth:`launch`, with a start failure turned into a state (caller holds the lock).

        The first start of a spec that can never start is ``FAILED``; any other failure is
        counted like a crash (backoff, restart, crash loop). A restart refused for good
        (e.g. the host's interpreter gone during an upgrade) is counted too: an instance
        that ran once should heal once the host does, not stay down until the next apply.
        """
        try:
            await self.launch()
        except StartRefused as exc:
            if first:
                await self.fail(exc.message)
            else:
                self.schedule_restart(f"could not start: {exc.message}")
        except RuntimeDriverError as exc:
            self.schedule_restart(f"could not start: {exc.message}")

    async def fail(self, reason: str) -> None:
        """A permanent start failure: FAILED with the reason; no process, record or retry."""
        record = self.record
        record.shim = record.child = record.app = None
        self.ready_since = None
        stale, record.cgroups = record.cgroups, []
        if stale:
            await asyncio.to_thread(cgroups.remove, stale)
        await asyncio.to_thread(self.host.records.delete, self.id)
        self._set(InstanceState.FAILED, f"could not start: {reason}", ready=False)

    def _after_start(self, message: str) -> None:
        """Process is up: ready now, or once the health check passes."""
        health = self.spec.health
        if health is None:
            self._set(InstanceState.RUNNING, message, ready=True)
            return
        self._set(InstanceState.STARTING, f"{message}; waiting for the health check", ready=False)
        self._start_health(health)

    def adopt(self) -> bool:
        """Watch a shim left running by an earlier control plane; False if it is gone."""
        shim = self.record.shim
        if shim is None or not shim.alive():
            return False
        try:
            pidfd = os.pidfd_open(shim.pid)
        except OSError:
            return False
        if not shim.alive():  # the pidfd pins the pid: this check is final
            os.close(pidfd)
            return False
        if self.record.child is None:  # the last control plane died before it noted them
            self.record.child, self.record.app = _started_by(shim.pid, sandbox=self.record.sandbox)
            self.save()
        self.generation += 1
        self.oom_baseline = cgroups.oom_kills(self.record.cgroups)  # a few bytes of sysfs
        self.watch(pidfd)
        self._after_start("re-adopted")
        return True

    # -- watching exits -------------------------------------------------------------------

    def watch(self, pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        self.pidfd = pidfd
        self.exited = loop.create_future()
        loop.add_reader(pidfd, self._on_shim_exit)

    def _unwatch(self) -> None:
        if self.pidfd is not None:
            asyncio.get_running_loop().remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def _on_shim_exit(self) -> None:
        self._unwatch()
        shim = self.record.shim
        if shim is not None:
            with contextlib.suppress(ChildProcessError):  # not ours when adopted
                os.waitpid(shim.pid, os.WNOHANG)
        if self.exited is not None and not self.exited.done():
            self.exited.set_result(None)
        self._stop_health()
        if not self.stopping and not self.detached:
            self.host.spawn_task(self.handle_exit())

    async def handle_exit(self) -> None:
        """The shim is gone: find out why, clean up leftovers, restart per policy."""
        async with self.lock:
            if self.stopping or self.detached or self.running:
                return
            status, oom, stderr = await asyncio.to_thread(self._collect_exit)
            record = self.record
            record.shim = record.child = record.app = None
            record.last_exit_code = status.code if status else None
            reason = describe_exit(
                status,
                oom=oom,
                stderr=stderr,
                unhealthy=self.unhealthy_reason,
                memory=self.spec.memory,
                replaced=self.replace_reason,
            )
            failed = (
                status is None
                or status.code != 0
                or self.unhealthy_reason is not None
                or self.replace_reason is not None
            )
            policy = self.spec.restart
            if policy == "never" or (policy == "on-failure" and not failed):
                self.ready_since = None
                self.save()
                self._set(InstanceState.EXITED, reason, ready=False)
                return
            self.schedule_restart(reason)

    def _collect_exit(self) -> tuple[ExitStatus | None, bool, str | None]:
        """Blocking part of exit handling: status file, OOM counter, leftovers, last stderr."""
        procs.reap_if_ours(self.record.shim)
        status = self.host.records.read_status(self.id)
        oom = cgroups.oom_kills(self.record.cgroups) > self.oom_baseline
        self.force_kill()
        stderr = last_line(self.host.logs_dir, self.id, since=self.record.started_at)
        return status, oom, stderr

    # -- restarting -----------------------------------------------------------------------

    def schedule_restart(self, reason: str) -> None:
        """BACKOFF (or CRASHLOOP) now, a new process after the backoff delay."""
        backoff = self.host.backoff
        record = self.record
        if backoff.stable(self.ready_since, time.time()):
            record.streak = 0
        self.ready_since = None
        delay = backoff.delay(record.streak)
        crashloop = backoff.is_crashloop(record.streak)
        record.streak += 1
        self.save()
        if self.missing_secrets:
            self.waiting_for_secrets = True
            self._set(
                InstanceState.BACKOFF,
                f"{reason}; waiting for the values of {', '.join(self.missing_secrets)} "
                "(secrets are never stored: run() must hand them back)",
                ready=False,
            )
            return
        if crashloop:
            message = (
                f"crash loop: {record.streak - 1} restarts in a row; {reason}; "
                f"next restart in {delay:.1f}s"
            )
        else:
            message = f"{reason}; restarting in {delay:.1f}s"
        self._set(
            InstanceState.CRASHLOOP if crashloop else InstanceState.BACKOFF, message, ready=False
        )
        generation = self.generation
        loop = asyncio.get_running_loop()
        self.restart_timer = loop.call_later(
            delay, lambda: self.host.spawn_task(self.restart(generation))
        )

    async def start_bounded(self, *, first: bool, generation: int | None = None) -> None:
        """:meth:`start_or_fail` within a start slot (:attr:`Host.start_slots`), held until
        the start settles (see :data:`BOOT_WINDOW`). With ``generation`` this is a restart,
        skipped if the instance moved on meanwhile. The caller holds no lock."""
        await self.host.start_slots.acquire()
        handed = False
        try:
            async with self.lock:
                if generation is not None:
                    self.restart_timer = None
                    if self.stopping or self.detached or self.running:
                        return
                    if generation != self.generation:
                        return
                    self.record.restarts += 1
                self.settled = asyncio.Event()
                await self.start_or_fail(first=first)
            self.host.spawn_task(self._release_slot_when_settled(self.settled))
            handed = True
        finally:
            if not handed:
                self.host.start_slots.release()

    async def _release_slot_when_settled(self, settled: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(BOOT_WINDOW):
                await settled.wait()
        except TimeoutError:
            pass
        finally:
            self.host.start_slots.release()

    async def restart(self, generation: int) -> None:
        await self.start_bounded(first=False, generation=generation)

    def refresh(self, spec: InstanceSpec) -> None:
        """``run()`` for a known id: keep the process, take the new spec (e.g. secrets)."""
        self.spec = spec
        self.record.spec = spec_to_json(spec)
        self.env = self._env(spec)
        self.save()
        if self.waiting_for_secrets and not self.missing_secrets and not self.stopping:
            self.waiting_for_secrets = False
            self.host.spawn_task(self.restart(self.generation))

    # -- health ---------------------------------------------------------------------------

    def _start_health(self, health: HealthSpec) -> None:
        self._stop_health()
        self.prober = Prober(
            health,
            ports=self.record.ports,
            cwd=self.spec.workdir,
            env=lambda: self.env,  # refreshed by run(): exec checks get new secret values
            confine=self.confine_check,
            address=self.address,
            on_ready=self._on_ready,
            on_unhealthy=self._on_unhealthy,
        )
        self.prober.start()

    def _stop_health(self) -> None:
        if self.prober is not None:
            self.prober.stop()
            self.prober = None

    def _usable(self) -> bool:
        return not (self.stopping or self.detached) and self.running

    def _on_ready(self) -> None:
        if self._usable():
            self._set(InstanceState.RUNNING, "ready", ready=True)

    def _on_unhealthy(self, reason: str) -> None:
        """Failed ``failure_threshold`` checks in a row: UNHEALTHY, then replaced (like a
        liveness probe); the exit handler counts it as a failure and restarts per policy."""
        if not self._usable():
            return
        threshold = self.spec.health.failure_threshold if self.spec.health else 1
        self.unhealthy_reason = f"{threshold} in a row, last: {reason}"
        self._set(
            InstanceState.UNHEALTHY,
            f"health check failed {threshold} times in a row: {reason}; restarting",
            ready=False,
        )
        self.host.spawn_task(self.terminate(self.spec.stop_grace))

    def replace(self, reason: str) -> bool:
        """Restart on request (a remediation): stopped like a failed liveness check, then
        restarted per its policy and backoff; False if it is not running now."""
        if not self._usable() or self.replace_reason is not None:
            return False
        self._stop_health()
        self.replace_reason = reason
        self._set(InstanceState.UNHEALTHY, f"{reason}; restarting", ready=False)
        self.host.spawn_task(self.terminate(self.spec.stop_grace))
        return True

    # -- stopping -------------------------------------------------------------------------

    def force_kill(self) -> None:
        """SIGKILL everything of the instance still there (blocking but quick)."""
        record = self.record
        cgroups.kill_all(record.cgroups)
        child = record.child
        if child is not None and child.alive():
            if record.sandbox:  # bubblewrap's init: killing it ends the whole pid namespace
                for init in procs.children(child.pid):
                    procs.kill(init, signal.SIGKILL)
            procs.killpg(child.pid, signal.SIGKILL)
        procs.kill_ref(record.app, signal.SIGKILL)

    async def terminate(self, grace: float) -> None:
        """SIGTERM through the shim, SIGKILL after ``grace``; returns when the shim is gone."""
        exited = self.exited
        if exited is None or exited.done() or self.pidfd is None:
            return
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await within(asyncio.shield(exited), grace)
        if exited.done():
            return
        await asyncio.to_thread(self.force_kill)
        with contextlib.suppress(TimeoutError):
            await within(asyncio.shield(exited), KILL_WAIT)
        if not exited.done() and self.pidfd is not None:
            log.warning("instance %s: shim did not exit after its app was killed", self.id)
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await within(asyncio.shield(exited), KILL_WAIT)

    async def stop(self) -> None:
        """Stop for good: SIGTERM, grace, SIGKILL; then remove record, status and cgroups."""
        self.stopping = True
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None
        self._stop_health()
        self._set(InstanceState.STOPPING, "stopping", ready=False)
        async with self.lock:
            await self.terminate(self.spec.stop_grace)
            await asyncio.to_thread(self._cleanup)
            self.ready_since = None
            self._set(InstanceState.EXITED, "stopped", ready=False)

    def _cleanup(self) -> None:
        self.force_kill()
        if not cgroups.remove(self.record.cgroups, timeout=KILL_WAIT):
            log.warning("instance %s: could not remove cgroups %s", self.id, self.record.cgroups)
        self.host.records.delete(self.id)
        remove_scratch(self.host.run_dir, self.id)
        if self.record.netns is not None and self.host.network is not None:
            try:
                self.host.network.delete(self.id, release=True)
            except RuntimeDriverError as exc:  # swept as a stray at the next start
                log.warning("instance %s: %s", self.id, exc.message)

    def detach(self) -> None:
        """Stop supervising but leave the processes running (control plane shutting down)."""
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None
        self._stop_health()
        self.save()
        self.detached = True
        self._unwatch()


def _started_by(shim: int, *, sandbox: bool) -> tuple[procs.ProcRef | None, procs.ProcRef | None]:
    """The shim's child and the app's host process, looked up once (no waiting)."""
    kids = procs.children(shim)
    child = procs.ProcRef.of(kids[0]) if kids else None
    if child is None or not sandbox:
        return child, child
    for init in procs.children(child.pid):
        for app in procs.children(init):
            ref = procs.ProcRef.of(app)
            if ref is not None:
                return child, ref
    return child, None


def preflight(spec: InstanceSpec, env: dict[str, str]) -> str:
    """The program to run, or :class:`StartRefused` saying why this spec can never start.

    Checked before anything is created, so that a hopeless spec fails its rollout at once
    instead of being retried: NUL bytes (the kernel cannot pass them), env names that are
    empty or hold ``=``, a missing or non-executable program or workdir. A secret value is
    never quoted, only the name of the variable that holds it.
    """
    for index, arg in enumerate(spec.command):
        if "\0" in arg:
            raise StartRefused(
                f"instance {spec.id}: run.command[{index}] holds a NUL byte",
                hint="the kernel cannot pass NUL bytes to a program: fix run.command",
            )
    for key, value in env.items():
        if not key or "=" in key or "\0" in key:
            raise StartRefused(
                f"instance {spec.id}: invalid environment variable name {key!r}",
                hint="names must be non-empty and hold neither '=' nor a NUL byte",
            )
        if "\0" in value:
            what = "the secret value of" if key in spec.secret_env else "the value of"
            raise StartRefused(
                f"instance {spec.id}: {what} environment variable {key} holds a NUL byte",
                hint="the kernel cannot pass NUL bytes in the environment: "
                + (
                    "write the secret again without it"
                    if key in spec.secret_env
                    else "fix spec.env in the App manifest"
                ),
            )
    try:
        return spawn.resolve_program(spec, env)
    except StartRefused:
        raise
    except RuntimeDriverError as exc:
        raise StartRefused(exc.message, hint=exc.hint) from exc


def describe_exit(
    status: ExitStatus | None,
    *,
    oom: bool,
    stderr: str | None,
    unhealthy: str | None,
    memory: int | None,
    replaced: str | None = None,
) -> str:
    """Why the process went away, said plainly, with its last stderr line as evidence."""
    if replaced is not None:
        text = f"restarted on request ({replaced})"
    elif unhealthy is not None:
        text = f"killed after failing health checks ({unhealthy})"
    elif status is None:
        text = "the instance's shim died without recording an exit status"
    elif status.error:
        return f"could not start: {status.error}"
    elif oom:
        text = f"killed by the out-of-memory killer (memory limit {memory} bytes)"
    elif status.signal:
        text = f"killed by {procs.signal_name(status.signal)} (exit code {status.code})"
    elif 128 < status.code < 128 + 65:  # bubblewrap reports a killed app this way
        name = procs.signal_name(status.code - 128)
        text = f"exited with code {status.code} (128+{status.code - 128}: {name})"
    else:
        text = f"exited with code {status.code}"
    if stderr:
        text += f"; last stderr: {stderr[:300]}"
    return text
