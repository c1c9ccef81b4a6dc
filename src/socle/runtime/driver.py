"""The runtime driver interface: the one seam between the engine and whatever runs instances.

The engine decides *which* instances should exist (app, release, ordinal); a driver makes
them exist and keeps them healthy on its own, like a kubelet: it starts processes, runs
health checks, restarts per ``spec.restart`` with backoff, and reports status. The local
supervisor is the embedded default; a Kubernetes driver or a fleet agent implement the same
protocol.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NewType, Protocol

from socle.model.app import HealthSpec, RestartPolicy
from socle.model.status import InstanceState as InstanceState  # re-exported for drivers

InstanceId = NewType("InstanceId", str)
ReleaseId = NewType("ReleaseId", str)


@dataclass(frozen=True)
class Mount:
    """A host folder shown inside an instance at ``target`` (e.g. a Volume's data).

    The driver binds ``source`` at ``target`` in the instance's filesystem view, read-only
    when ``read_only``; a writable mount is the only place besides scratch space where the
    instance may write, and the driver makes its top folder owned by the instance's uid.
    """

    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a driver needs to run one instance of one release of an app.

    ``env`` holds plain values; ``secret_env`` holds resolved secret values, which a driver
    must never write to disk, logs or status. ``PORT``/``PORT_<NAME>`` are added by the
    driver from the ports it allocates.
    """

    id: InstanceId
    app: str
    release: ReleaseId
    ordinal: int
    command: list[str]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    ports: list[str] = field(default_factory=list)
    health: HealthSpec | None = None
    restart: RestartPolicy = "always"
    stop_grace: float = 10.0
    memory: int | None = None
    cpu: float | None = None
    release_root: Path | None = None
    """Release folder the workdir lives in (bound into the sandbox); defaults to workdir."""
    mounts: list[Mount] = field(default_factory=list)
    """Extra folders (volumes) bound into the instance; see :class:`Mount`."""
    environment: str = "default"
    """The environment the app was applied to (service registry, DNS, metrics labels)."""
    labels: dict[str, str] = field(default_factory=dict)
    """The app's ``metadata.labels`` (registry tags, policy selectors)."""


FINAL_FAILURES = frozenset({InstanceState.FAILED, InstanceState.CRASHLOOP})
"""States that say a release will not become ready by waiting longer: a rollout stops at
once on them instead of at its progress deadline. ``FAILED`` comes from a permanent start
failure (program not found, a NUL byte in the command or env, an invalid env name);
``CRASHLOOP`` from an instance that exits, or fails to start, again and again."""


@dataclass
class InstanceStatus:
    id: InstanceId
    app: str
    release: ReleaseId
    ordinal: int
    state: InstanceState
    ready: bool
    pid: int | None
    address: str
    ports: dict[str, int]
    restarts: int
    started_at: float | None
    ready_since: float | None
    last_exit_code: int | None
    isolation: str
    message: str = ""
    uid: int | None = None
    """The host uid the instance runs as (its app's own), None when it is not known."""
    environment: str = "default"
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "app": self.app,
            "release": self.release,
            "ordinal": self.ordinal,
            "state": self.state.value,
            "ready": self.ready,
            "pid": self.pid,
            "address": self.address,
            "ports": dict(self.ports),
            "restarts": self.restarts,
            "started_at": self.started_at,
            "ready_since": self.ready_since,
            "last_exit_code": self.last_exit_code,
            "isolation": self.isolation,
            "message": self.message,
            "uid": self.uid,
            "environment": self.environment,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class InstanceResources:
    """Where to read an instance's usage from outside it (the per-instance exporter).

    Not part of :class:`RuntimeDriver`: a driver that can say where its instances live on
    this host offers ``resources()`` (the :class:`ResourceSource` protocol).
    """

    status: InstanceStatus
    cgroups: tuple[str, ...] = ()
    """The instance's cgroup (v1) folders, one per controller; empty without cgroups."""
    health_seconds: float | None = None
    """How long the last health probe took (None: no check, or none finished yet)."""
    health_ok: bool | None = None
    """Whether the last health probe passed."""


class ResourceSource(Protocol):
    def resources(self) -> list[InstanceResources]:
        """Every instance with where its usage can be read; a snapshot, never blocks."""


@dataclass(frozen=True)
class LogLine:
    time: float
    instance: InstanceId
    stream: str  # "stdout" | "stderr"
    text: str


@dataclass(frozen=True)
class Isolation:
    """What isolation this driver gives, said plainly to the user."""

    mode: str  # e.g. "namespaces+cgroups", "rlimits"
    detail: str
    warning: str | None = None
    protections: dict[str, bool] = field(default_factory=dict)
    """Which container practices hold on this host (``read_only_code``, ``non_root``,
    ``syscall_filter``, ...): True enforced, False not. Empty when the driver cannot tell."""
    features: dict[str, str] = field(default_factory=dict)
    """Each isolation mechanism as it really is here, in words (``network``,
    ``namespaces``, ``cgroups``, ``user``, ``seccomp``, ``landlock``). Empty when the
    driver cannot tell."""

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "detail": self.detail,
            "warning": self.warning,
            "protections": dict(self.protections),
            "features": dict(self.features),
        }


@dataclass
class ConfinedCommand:
    """A command wrapped to run confined: run ``argv`` with exactly ``env``, keeping the
    descriptors ``pass_fds`` open in the child, then call :meth:`close` once it started."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()

    def close(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = ()


class BuildSandbox(Protocol):
    """How a driver confines the build steps of an app (the release store calls it).

    A build step is as hostile as the app: it runs as the app's uid, sees the same minimal
    filesystem, and may write only into the release it builds (plus a private ``/tmp``).
    """

    def prepare(self, app: str, release_root: Path) -> None:
        """Make ``release_root`` writable for ``app``'s steps (blocking)."""

    def search_path(self, path: str) -> str:
        """``path`` (a PATH) as it means something inside the sandbox: folders the sandbox
        does not show are left out (a host PATH may start with e.g. pyenv shims under
        ``/root``, which would be found on the host and fail inside)."""

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
        """``argv`` (program already resolved to an absolute path) as a confined command,
        or None where this host gives no sandbox (isolation "none": the driver's
        ``isolation()`` says so). Raises :class:`socle.errors.RuntimeDriverError` if a
        sandbox is expected but cannot be had."""


StatusListener = Callable[[InstanceStatus], None]


class RuntimeDriver(Protocol):
    """Runs instances and keeps them alive. All methods are safe to call from the event loop."""

    name: str

    async def start(self) -> None:
        """Start supervising; re-adopt instances left running by a previous control plane."""

    async def close(self, *, stop_instances: bool) -> None:
        """Stop supervising. Instances keep running unless ``stop_instances``."""

    async def run(self, spec: InstanceSpec) -> InstanceStatus:
        """Ensure this instance runs. Idempotent by ``spec.id``: for an instance already
        running (or re-adopted) it only refreshes the kept spec (e.g. ``secret_env``).

        A start failure is a state, not an exception: a spec that can never start (program
        not found, a NUL byte in the command or env) gives a ``FAILED`` instance with the
        reason in its message; a failure that may pass (cgroup or fork trouble) gives
        ``BACKOFF`` and is retried like a crash. Raises ``StartRefused`` for a spec no
        instance can be made of (an invalid id), ``RuntimeDriverError`` when the call is
        refused for now (driver not started, ports changed for a known id)."""

    async def stop(self, instance_id: InstanceId) -> None:
        """Stop gracefully (SIGTERM, ``stop_grace``, SIGKILL) and forget the instance."""

    def instances(self) -> list[InstanceStatus]:
        """A snapshot of every instance this driver knows, adopted ones included."""

    def subscribe(self, listener: StatusListener) -> None:
        """Call ``listener`` (on the event loop) whenever an instance's status changes."""

    def logs(
        self, instance_id: InstanceId, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[LogLine]:
        """Lines of one instance's output, oldest first; with ``follow``, then new ones."""

    def isolation(self) -> Isolation:
        """The isolation instances get on this host."""
