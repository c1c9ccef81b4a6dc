"""Typed statuses shared by the engine, the runtime, the API and the CLI.

They are :class:`enum.StrEnum`, so the JSON the API sends is the plain word (``"succeeded"``)
and a client compares with the enum, never with a string copied from the server. They live
in ``socle.model`` (the ground floor) because the CLI must know them without importing the
engine or the runtime: the layers contract lets every layer import the model.
"""

from __future__ import annotations

from enum import StrEnum


class RevisionStatus(StrEnum):
    """Where one apply (a numbered revision) is."""

    BUILDING = "building"
    ROLLING = "rolling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"
    """The control plane stopped during the build; nothing was changed."""
    SUPERSEDED = "superseded"
    """Every app it changed was changed again by a newer revision first."""


TERMINAL_REVISION_STATUSES = frozenset(
    {
        RevisionStatus.SUCCEEDED,
        RevisionStatus.FAILED,
        RevisionStatus.ROLLED_BACK,
        RevisionStatus.INTERRUPTED,
        RevisionStatus.SUPERSEDED,
    }
)
"""A revision in one of these will not change any more."""


class ChangePhase(StrEnum):
    """Where one object of a revision is."""

    PENDING = "pending"
    BUILDING = "building"
    BUILT = "built"
    BUILD_FAILED = "build failed"
    ENSURED = "ensured"
    """A Volume exists with its size, before the commit."""
    ROLLING = "rolling"
    READY = "ready"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"
    SUPERSEDED = "superseded"
    DELETING = "deleting"
    DELETED = "deleted"


class RolloutStatus(StrEnum):
    """The rollout of one app's current target."""

    PROGRESSING = "progressing"
    COMPLETE = "complete"
    FAILED = "failed"


class AppHealth(StrEnum):
    """One word per app for status tables."""

    HEALTHY = "healthy"
    PROGRESSING = "progressing"
    DEGRADED = "degraded"
    FAILED = "failed"
    CRASHLOOP = "crashloop"
    STOPPED = "stopped"


class VolumeHealth(StrEnum):
    """One word per Volume for status tables."""

    READY = "ready"
    WARNING = "warning"
    """Its size is not enforced, or usage is above it."""
    MISSING = "missing"
    """Declared, but the provider has no such volume."""


class InstanceState(StrEnum):
    """The state of one running instance, as its runtime driver reports it."""

    STARTING = "starting"  # process started, health not yet passed
    RUNNING = "running"  # process up (and ready if it has a health check)
    UNHEALTHY = "unhealthy"  # process up, health failing
    BACKOFF = "backoff"  # exited, waiting to restart
    CRASHLOOP = "crashloop"  # exited repeatedly; restarting with long backoff
    EXITED = "exited"  # exited and will not be restarted (restart policy)
    STOPPING = "stopping"  # SIGTERM sent
    FAILED = "failed"  # cannot be started as specified; not retried until the spec changes


__all__ = [
    "TERMINAL_REVISION_STATUSES",
    "AppHealth",
    "ChangePhase",
    "InstanceState",
    "RevisionStatus",
    "RolloutStatus",
    "VolumeHealth",
]
