"""The Route kind's handler: routes are data for the ingress, which renders nginx from them.

Planning checks what only a view of every object can (the target's port exists on the
App; no two Routes claim the same host and path) and refuses a bad Route with its file and
line before anything changes. Applying a Route records it; the ingress (a control-plane
component that subscribes with :meth:`RouteHandler.subscribe`) re-renders nginx. Nothing
runs for a Route, so activation is immediate and deletion has nothing to release.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from socle.engine.kinds import HandlerDeps
from socle.engine.kinds.record import ManifestState, RecordKindHandler, rendered
from socle.engine.planner import Action
from socle.errors import ManifestError, Problem
from socle.model.kinds import ObjectRef
from socle.model.loader import LoadedManifests
from socle.model.route import Route

KIND = "Route"

RouteChecker = Callable[[Mapping[str, Route]], Awaitable[Mapping[str, str]]]
"""What the data plane would say of candidate routes: name -> refusal (empty: accepted)."""


@dataclass(frozen=True)
class RouteState(ManifestState):
    kind: ClassVar[str] = KIND

    @classmethod
    def of(cls, route: Route) -> RouteState:
        return cls(route.name, *rendered(route))

    def route(self) -> Route:
        return Route.model_validate(self.manifest)

    def dependencies(self) -> list[ObjectRef]:
        target = self.manifest["spec"].get("target") or {}
        if "app" in target:
            return [("App", target["app"])]
        if "service" in target:
            return [("ExternalService", target["service"])]
        return []

    def change(self, old: Any) -> tuple[Action, str]:
        return Action.UPDATE, "ingress reloaded (no app restarts)"

    def claims(self) -> list[str]:
        """A host has one owner: another team's Route may not add paths to it (see
        :func:`socle.engine.scopes.check_claims`)."""
        return [f"host {self.manifest['spec']['host']}"]


def _problem(loaded: LoadedManifests, name: str, path: str, reason: str) -> Problem:
    origin = loaded.origins.get(f"{KIND}/{name}", "")
    file, _, line = origin.rpartition(":")
    if not line.isdigit():
        return Problem(origin or None, None, path, reason)
    return Problem(file, int(line), path, reason)


def check_routes(loaded: LoadedManifests) -> list[Problem]:
    """Problems only a view of every object shows: a target port the App does not have, a
    host and path claimed twice."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], str] = {}
    for name, obj in sorted(loaded.of_kind(KIND).items()):
        route = cast(Route, obj)
        spec = route.spec
        key = (spec.host, spec.path.rstrip("/") or "/")
        if key in seen:
            problems.append(
                _problem(
                    loaded,
                    name,
                    "spec.path",
                    f"host {spec.host} path {spec.path} is already routed by Route/{seen[key]}",
                )
            )
        else:
            seen[key] = name
        target = spec.target
        if target is None:
            continue
        kind = "App" if target.app is not None else "ExternalService"
        found = loaded.objects.get((kind, target.name))
        if found is None:
            continue  # the loader already refused the missing reference
        ports = [p.name for p in getattr(getattr(found, "spec", None), "ports", [])]
        if target.port not in ports:
            known = ", ".join(ports) if ports else "none"
            problems.append(
                _problem(
                    loaded,
                    name,
                    "spec.target.port",
                    f"{kind} {target.name} has no port named {target.port!r} (its ports: {known})",
                )
            )
    return problems


class RouteHandler(RecordKindHandler[Route, RouteState]):
    """Routes: recorded targets; listeners (the ingress) hear about every change."""

    kind = KIND
    deleted_message = "route removed from the ingress"

    def __init__(self, deps: HandlerDeps) -> None:
        super().__init__(deps)
        self._since: dict[str, int] = {}
        """Revision at which each route first claimed its host and path (kept across
        updates that leave them alone): the ingress's order of claims."""
        self._checker: RouteChecker | None = None

    def set_checker(self, checker: RouteChecker | None) -> None:
        """Ask ``checker`` (the ingress: ``nginx -t`` on the candidate configuration) at
        every plan, so that a Route nginx would refuse is refused before anything changes."""
        self._checker = checker

    def routes(self) -> dict[str, Route]:
        """The applied routes, by name, the earliest applied first: the ingress gives a
        host and path to the first Route that claims it (a later one, maybe another
        team's, cannot take it over)."""
        order = sorted(self._targets, key=lambda name: (self._since.get(name, 0), name))
        return {name: self._targets[name][0].route() for name in order}

    def _claimed_since(self, name: str, state: RouteState, revision: int) -> int:
        """When ``name`` claimed its host and path: kept while they stay, else now."""
        old = self._targets.get(name)
        if old is not None and _claim(old[0]) == _claim(state):
            return self._since.get(name, old[1])
        return revision

    def state_of(self, obj: Route) -> RouteState:
        return RouteState.of(obj)

    def decode(self, data: Mapping[str, Any]) -> RouteState:
        return RouteState.from_json(data)

    async def check(self, loaded: LoadedManifests, states: Mapping[str, RouteState]) -> None:
        problems = check_routes(loaded)
        if not problems and self._checker is not None and loaded.of_kind(KIND):
            candidates = {n: cast(Route, o) for n, o in loaded.of_kind(KIND).items()}
            refused = await self._checker(candidates)
            problems = [
                _problem(loaded, name, "spec", f"nginx would refuse Route/{name}: {reason}")
                for name, reason in sorted(refused.items())
            ]
        if problems:
            raise ManifestError(problems)

    def _restored(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        self._since = {
            name: int(data.get("since", data["revision"])) for name, data in records.items()
        }
        self._notify()

    def _record_extra(self, name: str, state: RouteState, revision: int) -> dict[str, Any]:
        return {"since": self._claimed_since(name, state, revision)}

    def _keep(self, name: str, state: RouteState, revision: int) -> None:
        self._since[name] = self._claimed_since(name, state, revision)
        super()._keep(name, state, revision)

    def _drop(self, name: str) -> None:
        super()._drop(name)
        self._since.pop(name, None)

    def row(self, name: str, state: RouteState, revision: int) -> dict[str, Any]:
        spec = state.manifest["spec"]
        target = spec.get("target") or {}
        return {
            "kind": KIND,
            "name": name,
            "health": "ready",
            "revision": revision,
            "message": "",
            "host": spec["host"],
            "path": spec.get("path", "/"),
            "target": target.get("app") or target.get("service"),
        }


def _claim(state: RouteState) -> tuple[str, str]:
    spec = state.manifest["spec"]
    return spec["host"], str(spec.get("path", "/")).rstrip("/") or "/"
