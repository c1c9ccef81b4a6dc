"""The ExternalService kind's handler: addresses handed to the service registry.

Nothing runs and nothing is built: an applied ExternalService is given to the connect layer
(:class:`~socle.engine.kinds.ExternalSink`), which registers its addresses (and probes them
when the manifest has a ``health`` check); a deleted one is removed from it. At start the
stored targets are handed over again, so the registry holds them after a restart too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from socle.engine.kinds import ExternalSink, HandlerDeps
from socle.engine.kinds.record import ManifestState, RecordKindHandler, rendered
from socle.engine.planner import Action
from socle.model.external import ExternalService
from socle.model.status import AppHealth

KIND = "ExternalService"
ENVIRONMENT = "default"
"""Every object lives in ``default`` until objects are scoped by environment (as Apps)."""


@dataclass(frozen=True)
class ExternalState(ManifestState):
    kind: ClassVar[str] = KIND

    @classmethod
    def of(cls, service: ExternalService) -> ExternalState:
        return cls(service.name, *rendered(service))

    @property
    def spec(self) -> dict[str, Any]:
        spec = dict(self.manifest["spec"])
        spec["labels"] = dict(self.manifest.get("metadata", {}).get("labels") or {})
        return spec

    def change(self, old: Any) -> tuple[Action, str]:
        return Action.UPDATE, "registry entries updated (nothing restarts)"


class ExternalServiceHandler(RecordKindHandler[ExternalService, ExternalState]):
    """External services: registered in the connect layer, never run."""

    kind = KIND
    remove_after_deps = True
    deleted_message = "deregistered"

    def __init__(self, deps: HandlerDeps) -> None:
        super().__init__(deps)
        self._sink: ExternalSink | None = deps.externals

    def state_of(self, obj: ExternalService) -> ExternalState:
        return ExternalState.of(obj)

    def decode(self, data: Mapping[str, Any]) -> ExternalState:
        return ExternalState.from_json(data)

    def _tell(self, name: str, state: ExternalState | None) -> None:
        if self._sink is not None:
            self._sink.set(name, ENVIRONMENT, None if state is None else state.spec)

    async def stop(self) -> None:
        """Entries stay registered until the control plane (and its registry) stops."""

    def row(self, name: str, state: ExternalState, revision: int) -> dict[str, Any]:
        passing, total = self._sink.health(name, ENVIRONMENT) if self._sink is not None else (0, 0)
        if self._sink is None:
            health, message = AppHealth.DEGRADED, "no service registry on this control plane"
        elif passing == total:
            health, message = AppHealth.HEALTHY, f"{passing}/{total} addresses passing"
        elif passing:
            health, message = AppHealth.DEGRADED, f"{passing}/{total} addresses passing"
        else:
            health, message = AppHealth.FAILED, f"0/{total} addresses passing"
        return {
            "kind": KIND,
            "name": name,
            "health": health,
            "revision": revision,
            "message": message,
            "addresses": list(state.manifest["spec"]["addresses"]),
            "ports": {p["name"]: p["port"] for p in state.manifest["spec"].get("ports", [])},
        }
