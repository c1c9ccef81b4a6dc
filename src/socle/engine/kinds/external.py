"""The ExternalService kind's handler: addresses handed to the service registry.

Nothing runs and nothing is built: an applied ExternalService is given to the connect layer
(:class:`~socle.engine.kinds.ExternalSink`), which registers its addresses (and probes them
when the manifest has a ``health`` check); a deleted one is removed from it. At start the
stored targets are handed over again, so the registry holds them after a restart too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from socle.engine.kinds import ApplyContext, ExternalSink, HandlerDeps
from socle.engine.planner import Action, Change, ObjectState
from socle.model.external import ExternalService
from socle.model.kinds import ObjectRef
from socle.model.loader import LoadedManifests
from socle.model.status import AppHealth, ChangePhase

KIND = "ExternalService"
ENVIRONMENT = "default"
"""Every object lives in ``default`` until objects are scoped by environment (as Apps)."""


@dataclass(frozen=True)
class ExternalState:
    name: str
    manifest: dict[str, Any]
    digest: str
    kind: ClassVar[str] = KIND

    @classmethod
    def of(cls, service: ExternalService) -> ExternalState:
        manifest = service.model_dump(mode="json", by_alias=True, exclude_none=True)
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        return cls(service.name, manifest, hashlib.sha256(text.encode()).hexdigest())

    @property
    def spec(self) -> dict[str, Any]:
        spec = dict(self.manifest["spec"])
        spec["labels"] = dict(self.manifest.get("metadata", {}).get("labels") or {})
        return spec

    def dependencies(self) -> list[ObjectRef]:
        return []

    def comparable(self) -> dict[str, Any]:
        return self.manifest

    def change(self, old: Any) -> tuple[Action, str]:
        return Action.UPDATE, "registry entries updated (nothing restarts)"


def _encode(state: ExternalState) -> dict[str, Any]:
    return {"name": state.name, "manifest": state.manifest, "digest": state.digest}


def _decode(data: Mapping[str, Any]) -> ExternalState:
    return ExternalState(data["name"], data["manifest"], data["digest"])


class ExternalServiceHandler:
    """External services: registered in the connect layer, never run."""

    kind = KIND

    def __init__(self, deps: HandlerDeps) -> None:
        self._sink: ExternalSink | None = deps.externals
        self._report = deps.report
        self._targets: dict[str, tuple[ExternalState, int]] = {}
        self._states: dict[int, tuple[ExternalService, ExternalState]] = {}

    async def restore(self, records: Mapping[str, bytes]) -> dict[str, int]:
        targets = {}
        for name, raw in records.items():
            data = json.loads(raw)
            targets[name] = (_decode(data["state"]), int(data["revision"]))
        for gone in set(self._targets) - set(targets):
            self._tell(gone, None)
        self._targets = targets
        for name, (state, _) in targets.items():
            self._tell(name, state)
        return {}

    def _tell(self, name: str, state: ExternalState | None) -> None:
        if self._sink is not None:
            self._sink.set(name, ENVIRONMENT, None if state is None else state.spec)

    async def start(self) -> None:
        """Nothing runs; the targets were handed to the registry by :meth:`restore`."""

    async def stop(self) -> None:
        """Entries stay registered until the control plane (and its registry) stops."""

    def current(self) -> dict[str, ObjectState]:
        return {name: state for name, (state, _) in self._targets.items()}

    async def desired(self, loaded: LoadedManifests) -> dict[str, ObjectState]:
        known = self._states
        fresh: dict[int, tuple[ExternalService, ExternalState]] = {}
        states: dict[str, ObjectState] = {}
        for name, obj in loaded.of_kind(KIND).items():
            service = cast(ExternalService, obj)
            entry = known.get(id(service))
            if entry is None or entry[0] is not service:
                entry = (service, ExternalState.of(service))
            fresh[id(service)] = entry
            states[name] = entry[1]
        self._states = fresh
        return states

    def export_cache(self) -> Any:
        return list(self._states.values())

    def adopt_cache(self, exported: Any) -> None:
        self._states = {id(service): (service, state) for service, state in exported}

    def encode(self, name: str, state: ObjectState) -> dict[str, Any]:
        return _encode(cast(ExternalState, state))

    def decode(self, data: Mapping[str, Any]) -> ObjectState:
        return _decode(data)

    async def check_reapply(self, states: Mapping[str, ObjectState], revision: int) -> None:
        """A recorded ExternalService can always be registered again."""

    async def prepare(
        self, changes: list[Change], desired: Mapping[str, ObjectState], ctx: ApplyContext
    ) -> dict[str, str]:
        return {}

    def record(self, name: str, state: ObjectState, revision: int) -> bytes:
        data = {"state": _encode(cast(ExternalState, state)), "revision": revision}
        return json.dumps(data, separators=(",", ":")).encode()

    async def activate(self, applied: Mapping[str, ObjectState | None], revision: int) -> set[str]:
        pending: set[str] = set()
        for name, state in applied.items():
            if state is None:
                self._targets.pop(name, None)
                pending.add(name)  # removed from the registry in `delete`, after dependents
            else:
                external = cast(ExternalState, state)
                self._targets[name] = (external, revision)
                self._tell(name, external)
        return pending

    async def delete(self, name: str, revision: int) -> None:
        if name in self._targets:
            self._report(revision, KIND, name, ChangePhase.DELETED, "declared again; kept")
            return
        self._tell(name, None)
        self._report(revision, KIND, name, ChangePhase.DELETED, "deregistered")

    async def refreshed(self) -> dict[str, ObjectState]:
        return {}

    async def status(self) -> list[dict[str, Any]]:
        rows = []
        for name, (state, revision) in sorted(self._targets.items()):
            passing, total = (
                self._sink.health(name, ENVIRONMENT) if self._sink is not None else (0, 0)
            )
            if self._sink is None:
                health, message = AppHealth.DEGRADED, "no service registry on this control plane"
            elif passing == total:
                health, message = AppHealth.HEALTHY, f"{passing}/{total} addresses passing"
            elif passing:
                health, message = AppHealth.DEGRADED, f"{passing}/{total} addresses passing"
            else:
                health, message = AppHealth.FAILED, f"0/{total} addresses passing"
            rows.append(
                {
                    "kind": KIND,
                    "name": name,
                    "health": health,
                    "revision": revision,
                    "message": message,
                    "addresses": list(state.manifest["spec"]["addresses"]),
                    "ports": {
                        p["name"]: p["port"] for p in state.manifest["spec"].get("ports", [])
                    },
                }
            )
        return rows
