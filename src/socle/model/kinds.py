"""The registry of manifest kinds: a kind is one model module plus one ``register`` call.

The loader, the overlays, the cross-object checks and the JSON Schema read a
:class:`KindRegistry`, so a registered kind is loaded, patched per environment, validated,
checked for dangling references and offered to editors without other changes. The registry
is an object you build and pass (tests register their own kinds); :func:`default_kinds`
builds the one Socle ships, and the loader uses it unless given another.

References between objects (``dependsOn``, an App's ``spec.volumes``) are declared by each
kind's ``references`` function, as :class:`Reference` values naming ``(kind, name)``; the
checks refuse references to objects that do not exist and dependency cycles, whatever the
kinds involved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NewType

from pydantic import BaseModel

from socle.model.yamlsource import PathPart

API_VERSIONS: tuple[str, ...] = ("socle/v1",)
"""Accepted ``apiVersion`` values, newest first."""

Kind = NewType("Kind", str)
ObjectRef = tuple[str, str]
"""``(kind, name)``: how every object is addressed (store keys, plans, status)."""

DEFAULT_REFERENCE_KIND = "App"
"""The kind a bare name in ``dependsOn`` means (``api`` is ``App/api``)."""


@dataclass(frozen=True)
class Reference:
    """One object naming another, at ``path`` of the referring object."""

    path: tuple[PathPart, ...]
    kind: str
    name: str
    field: str = "dependsOn"
    """What the user wrote it as (for messages): ``dependsOn`` or ``volumes``."""

    @property
    def ref(self) -> ObjectRef:
        return (self.kind, self.name)


Finding = tuple[ObjectRef, tuple[PathPart, ...], str]
"""``((kind, name), field path, reason)``: a problem the loader locates in the manifests."""

References = Callable[[Any], list[Reference]]
Check = Callable[[Path, Mapping[str, Any]], list[tuple[str, tuple[PathPart, ...], str]]]
"""Checks of one kind's objects that need the repository (e.g. App workdirs): given the
root and the valid objects by name, ``(name, path, reason)`` findings."""


ENV_SEPARATOR = "--"
"""Between an object's declared name and its environment in the internal name an object
gets when another environment already has that name (``api--prod``): see
:mod:`socle.engine.scopes`."""


def declared_name(internal: str, env: str) -> str:
    """The name the manifests give an object, from its internal name and environment
    (``api--prod`` in ``prod`` is ``api``): for readers that only see the runtime's
    instances (service registry, DNS ``APP.ENV.socle.internal``, metrics labels)."""
    suffix = f"{ENV_SEPARATOR}{env}"
    return (
        internal[: -len(suffix)] if internal.endswith(suffix) and internal != suffix else internal
    )


def parse_reference(text: str) -> ObjectRef:
    """``"Volume/data"`` -> ``("Volume", "data")``; a bare ``"api"`` -> ``("App", "api")``."""
    kind, sep, name = text.partition("/")
    return (kind, name) if sep else (DEFAULT_REFERENCE_KIND, text)


def format_reference(ref: ObjectRef) -> str:
    """The inverse of :func:`parse_reference`: Apps by bare name, others as ``Kind/name``."""
    kind, name = ref
    return name if kind == DEFAULT_REFERENCE_KIND else f"{kind}/{name}"


def _no_references(_: Any) -> list[Reference]:
    return []


@dataclass(frozen=True)
class KindInfo:
    kind: str
    model: type[BaseModel]
    references: References = _no_references
    checks: tuple[Check, ...] = ()


class KindRegistry:
    """``kind`` -> model, reference function and checks; iteration keeps registration order."""

    def __init__(self) -> None:
        self._kinds: dict[str, KindInfo] = {}

    def register(
        self,
        kind: str,
        model: type[BaseModel],
        *,
        references: References = _no_references,
        checks: tuple[Check, ...] = (),
    ) -> None:
        """Add a kind; refuses a kind registered twice (two modules claiming one name)."""
        if not kind[:1].isupper() or not kind.isalnum():
            raise ValueError(f"a kind is a CamelCase word, not {kind!r}")
        if kind in self._kinds:
            raise ValueError(f"kind {kind} is already registered")
        self._kinds[kind] = KindInfo(kind, model, references, checks)

    def get(self, kind: str) -> KindInfo:
        return self._kinds[kind]

    def model(self, kind: str) -> type[BaseModel]:
        return self._kinds[kind].model

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def items(self) -> list[tuple[str, KindInfo]]:
        return list(self._kinds.items())


def build_default_kinds() -> KindRegistry:
    """A new registry with the kinds Socle ships (imports their modules)."""
    from socle.model import checks
    from socle.model.alertrule import AlertRule
    from socle.model.app import App, app_references
    from socle.model.external import ExternalService
    from socle.model.networkpolicy import NetworkPolicy, networkpolicy_references
    from socle.model.notifier import Notifier
    from socle.model.route import Route, route_references
    from socle.model.slo import SLO
    from socle.model.source import Source
    from socle.model.volume import Volume

    registry = KindRegistry()
    registry.register("App", App, references=app_references, checks=(checks.workdirs,))
    registry.register("Volume", Volume)
    registry.register("ExternalService", ExternalService)
    registry.register("AlertRule", AlertRule)
    registry.register("SLO", SLO)
    registry.register("Route", Route, references=route_references)
    registry.register("Source", Source)
    registry.register("NetworkPolicy", NetworkPolicy, references=networkpolicy_references)
    registry.register("Notifier", Notifier)
    return registry


def default_kinds() -> KindRegistry:
    """A fresh registry of the shipped kinds (cheap: a few entries; nothing global to mutate);
    callers needing other kinds build and pass their own."""
    return build_default_kinds()
