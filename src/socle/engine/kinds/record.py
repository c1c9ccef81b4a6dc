"""The shared base of the kinds that only record their objects: nothing is built or run.

ExternalService, NetworkPolicy, Route, AlertRule/SLO and Volume objects become a target
record (``objects/<Kind>/<name>``) that something else acts on: a sink the handler tells
(the service registry, the firewall), listeners it calls after each change (the ingress,
Prometheus) or a provider (volumes). :class:`RecordKindHandler` holds what they share:
planning states cached by model identity, the record's JSON, restore, activation, deletion
and listeners. A kind subclass says only what differs:

=========================  ===============================================================
``state_of`` / ``decode``  the kind's planning state, from a model or from a record's JSON
``check``                  problems only a view of every object shows (refused at plan time)
``_tell``                  hand one target (or its removal: None) to the kind's sink
``remove_after_deps``      True: a deleted object leaves its sink in :meth:`delete`, once
                           the objects that depended on it settled (an ExternalService
                           outlives the Routes to it); False: at once, in :meth:`activate`
``deleted_message``        what the revision says of a deleted object (None: nothing)
``row`` / ``status``       the kind's rows for ``socle status``
=========================  ===============================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

from socle.engine.kinds import ApplyContext, HandlerDeps
from socle.engine.planner import Change, ObjectState
from socle.model.kinds import ObjectRef
from socle.model.loader import LoadedManifests
from socle.model.status import ChangePhase

log = logging.getLogger(__name__)


class RecordState(ObjectState, Protocol):
    """A planning state whose record is its rendered manifest and that manifest's digest."""

    @property
    def manifest(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=RecordState)
M = TypeVar("M")


def rendered(obj: Any, *, exclude_none: bool = True) -> tuple[dict[str, Any], str]:
    """``obj``'s manifest as camelCase JSON data, and the SHA-256 of its canonical text
    (what the planner compares: equal digests, no change)."""
    manifest: dict[str, Any] = obj.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return manifest, hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ManifestState:
    """The usual record state: the rendered manifest is what plans diff, and the object
    depends on nothing (a kind overrides what differs, and says how a change applies)."""

    name: str
    manifest: dict[str, Any]
    digest: str
    kind: ClassVar[str] = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The inverse of :func:`encode_state`."""
        return cls(data["name"], data["manifest"], data["digest"])

    def dependencies(self) -> list[ObjectRef]:
        return []

    def comparable(self) -> dict[str, Any]:
        return self.manifest


def encode_state(state: RecordState) -> dict[str, Any]:
    """The JSON of a record state (a revision's desired state, a target record)."""
    return {"name": state.name, "manifest": state.manifest, "digest": state.digest}


class RecordKindHandler(Generic[M, S]):
    """A kind whose objects are recorded and handed on, never run (see the module table).

    ``M`` is the kind's model class, ``S`` its planning state."""

    kind: ClassVar[str]
    remove_after_deps: ClassVar[bool] = False
    deleted_message: ClassVar[str | None] = None

    def __init__(self, deps: HandlerDeps) -> None:
        self._deps = deps
        """Read only when used: a kind that reports nothing needs none of the parts."""
        self._targets: dict[str, tuple[S, int]] = {}
        self._states: dict[int, tuple[M, S]] = {}
        """Planning states by model identity: the manifest cache hands the same model out
        again while its documents are unchanged (entries hold the model, so ids stay
        unique)."""
        self._listeners: list[Callable[[], None]] = []

    # -- what a kind says ------------------------------------------------------------------

    def state_of(self, obj: M) -> S:
        """The planning state of one model object."""
        raise NotImplementedError

    def decode(self, data: Mapping[str, Any]) -> S:
        """The inverse of :meth:`encode`."""
        raise NotImplementedError

    async def check(self, loaded: LoadedManifests, states: Mapping[str, S]) -> None:
        """Raise ManifestError for problems only a view of every object shows."""

    def _tell(self, name: str, state: S | None) -> None:
        """Hand target ``name`` (None: its removal) to the kind's sink; none by default."""

    def _record_extra(self, name: str, state: S, revision: int) -> dict[str, Any]:
        """Fields a kind adds to a target record (beside ``state`` and ``revision``)."""
        return {}

    def _restored(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Called after :meth:`restore` with every record's JSON."""

    def _keep(self, name: str, state: S, revision: int) -> None:
        """Make ``state`` the target of ``name`` (committed at ``revision``)."""
        self._targets[name] = (state, revision)

    def _drop(self, name: str) -> None:
        """``name`` is no longer a target."""
        self._targets.pop(name, None)

    def _report(self, revision: int, name: str, phase: str, message: str) -> None:
        self._deps.report(revision, self.kind, name, phase, message)

    # -- listeners -------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each apply that changed objects of this kind."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("%s listener failed", self.kind)

    # -- the KindHandler protocol ----------------------------------------------------------

    async def restore(self, records: Mapping[str, bytes]) -> dict[str, int]:
        decoded = {name: json.loads(raw) for name, raw in records.items()}
        targets = {
            name: (self.decode(data["state"]), int(data["revision"]))
            for name, data in decoded.items()
        }
        for gone in set(self._targets) - set(targets):
            self._tell(gone, None)
        self._targets = targets
        for name, (state, _) in targets.items():
            self._tell(name, state)
        self._restored(decoded)
        return {}

    async def start(self) -> None:
        """Nothing runs; the targets were handed over by :meth:`restore`."""

    async def stop(self) -> None:
        """Nothing to stop: what was handed over stays (apps outlive the control plane)."""

    def current(self) -> dict[str, ObjectState]:
        return {name: state for name, (state, _) in self._targets.items()}

    async def desired(self, loaded: LoadedManifests) -> dict[str, ObjectState]:
        known = self._states
        fresh: dict[int, tuple[M, S]] = {}
        states: dict[str, S] = {}
        for name, obj in loaded.of_kind(self.kind).items():
            model = cast(M, obj)
            entry = known.get(id(model))
            if entry is None or entry[0] is not model:
                entry = (model, self.state_of(model))
            fresh[id(model)] = entry
            states[name] = entry[1]
        await self.check(loaded, states)
        self._states = fresh
        return dict(states)

    def export_cache(self) -> Any:
        return list(self._states.values())

    def adopt_cache(self, exported: Any) -> None:
        self._states = {id(model): (model, state) for model, state in exported or ()}

    def encode(self, name: str, state: ObjectState) -> dict[str, Any]:
        return encode_state(cast(RecordState, state))

    async def check_reapply(self, states: Mapping[str, ObjectState], revision: int) -> None:
        """A recorded object can always be applied again."""

    async def prepare(
        self, changes: list[Change], desired: Mapping[str, ObjectState], ctx: ApplyContext
    ) -> dict[str, str]:
        return {}

    def record(self, name: str, state: ObjectState, revision: int) -> bytes:
        typed = cast(S, state)
        data = {
            "state": encode_state(typed),
            "revision": revision,
            **self._record_extra(name, typed, revision),
        }
        return json.dumps(data, separators=(",", ":")).encode()

    async def activate(self, applied: Mapping[str, ObjectState | None], revision: int) -> set[str]:
        pending: set[str] = set()
        for name, state in applied.items():
            if state is None:
                self._drop(name)
                if self.remove_after_deps:
                    pending.add(name)  # handed over as removed in `delete`, after dependents
                else:
                    self._tell(name, None)
            else:
                typed = cast(S, state)
                self._keep(name, typed, revision)
                self._tell(name, typed)
        if applied:
            self._notify()
        return pending

    async def delete(self, name: str, revision: int) -> None:
        if self.remove_after_deps:
            if name in self._targets:
                self._report(revision, name, ChangePhase.DELETED, "declared again; kept")
                return
            self._tell(name, None)
        if self.deleted_message is not None:
            self._report(revision, name, ChangePhase.DELETED, self.deleted_message)

    async def refreshed(self) -> dict[str, ObjectState]:
        return {}

    async def status(self) -> list[dict[str, Any]]:
        """One row per target, from :meth:`row`."""
        return [
            self.row(name, state, revision)
            for name, (state, revision) in sorted(self._targets.items())
        ]

    def row(self, name: str, state: S, revision: int) -> dict[str, Any]:
        """The status row of one target (a kind adds its own fields)."""
        return {
            "kind": self.kind,
            "name": name,
            "health": "ready",
            "revision": revision,
            "message": "",
        }


__all__ = ["ManifestState", "RecordKindHandler", "RecordState", "encode_state", "rendered"]
