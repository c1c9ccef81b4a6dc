"""Kind handlers: what the engine does with each kind of object, behind one protocol.

The engine (:mod:`socle.engine.service`) plans, records revisions, commits targets and
reports progress for every kind the same way; everything a kind means is in its handler:

========================  ==============================================================
``desired``               the planner's state of each object (digest, diff view, deps)
``encode``/``decode``     the state as stored in a revision's desired state (rollback)
``restore``               targets read back from the store at start
``prepare``               work before the commit that may fail without changing anything
                          (App: build releases; Volume: create or grow the folder)
``record``                the target record written at ``objects/<Kind>/<name>``
``activate``              make committed targets so (App: hand them to the controller)
``delete``                an object removed by a committed plan, once its dependents are
                          gone (Volume: release or purge the data)
``status``                one row per object for ``socle status``
========================  ==============================================================

Adding a kind is its model (``socle.model.<kind>``, registered in
:func:`socle.model.kinds.build_default_kinds`) plus a handler module here, registered in
:func:`build_handlers`. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from socle.engine.planner import Change, ObjectState
from socle.model.loader import LoadedManifests

if TYPE_CHECKING:
    from socle.engine.controller import TemplateHook
    from socle.engine.releases import ReleaseStore
    from socle.engine.secret_refs import SecretReader
    from socle.engine.targets import TargetRecords
    from socle.runtime.driver import RuntimeDriver
    from socle.runtime.volumes import VolumeProvider
    from socle.tasks import TaskMonitor


class ExternalSink(Protocol):
    """What the ExternalService handler tells the connect layer (a service registry feeder):
    plain data, so that the engine needs nothing of the network package."""

    def set(self, name: str, environment: str, spec: Mapping[str, Any] | None) -> None:
        """Register (or update) external service ``name`` from its manifest's ``spec``
        (camelCase JSON); None removes it."""

    def health(self, name: str, environment: str) -> tuple[int, int]:
        """``(passing, total)`` addresses of ``name``."""


class FirewallSink(Protocol):
    """What the NetworkPolicy handler tells the connect layer's firewall (plain data)."""

    def set(self, name: str, spec: Mapping[str, Any] | None) -> None:
        """Add or replace policy ``name`` from its manifest's ``spec`` (camelCase JSON);
        None removes it. The firewall recompiles and reloads its ruleset."""

    def policy_status(self, name: str) -> tuple[bool, str]:
        """``(enforced, message)`` of policy ``name`` (plainly "not enforced: why")."""


Reporter = Callable[[int, str, str, str, str], None]
"""``(revision, kind, name, phase, message)``: an object's outcome that arrived after the commit
(``ready``, ``failed``, ``rolled back``, ``deleted``)."""


@dataclass
class ApplyContext:
    """What ``prepare`` may use: the revision being applied and how to show progress."""

    revision: int
    root: Path | None
    """The manifest repository, or None when re-applying a recorded state (rollback)."""
    mark: Callable[[str, str, str], None]
    """``(name, phase, message)``: set an object's phase in the revision (not saved yet)."""
    save: Callable[[], Awaitable[None]]
    """Write the revision now (e.g. once every object shows ``building``)."""
    progress: Callable[[str, str, str], Awaitable[None]]
    """:attr:`mark`, then a save if none happened for a while (throttled)."""


class KindHandler(Protocol):
    """One kind's behaviour in plan, apply, status and rollback (see the module table)."""

    @property
    def kind(self) -> str: ...

    async def restore(self, records: Mapping[str, bytes]) -> dict[str, int]:
        """Every stored target of this kind, by name (at start, and again after another
        writer won a race): objects not in ``records`` are no longer targets. Returns the
        names whose outcome is still pending, with their revision (a rollout in progress)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def current(self) -> dict[str, ObjectState]:
        """The committed target state of each object of this kind."""
        ...

    async def desired(self, loaded: LoadedManifests) -> dict[str, ObjectState]:
        """The planner's state of each object of this kind in ``loaded`` (may raise
        ManifestError for problems only the engine can see, e.g. unreadable secrets)."""
        ...

    def encode(self, name: str, state: ObjectState) -> dict[str, Any]:
        """JSON of ``state`` for a revision's desired state."""
        ...

    def decode(self, data: Mapping[str, Any]) -> ObjectState:
        """The inverse of :meth:`encode`."""
        ...

    async def check_reapply(self, states: Mapping[str, ObjectState], revision: int) -> None:
        """Refuse (NotFoundError) re-applying recorded states that can no longer be
        (rollback: a release no longer kept)."""
        ...

    async def prepare(
        self, changes: list[Change], desired: Mapping[str, ObjectState], ctx: ApplyContext
    ) -> dict[str, str]:
        """Work before the commit for the created/updated objects; returns failures by
        name (nothing is committed if any)."""
        ...

    def record(self, name: str, state: ObjectState, revision: int) -> bytes:
        """The target record to store for ``name`` (also remembered as current)."""
        ...

    async def activate(self, applied: Mapping[str, ObjectState | None], revision: int) -> set[str]:
        """Make committed targets so (None: deleted, the handler may stop what runs); returns
        the names whose outcome will be reported later (others are ready at once)."""
        ...

    async def delete(self, name: str, revision: int) -> None:
        """Called once every object of the revision that depended on ``name`` settled."""
        ...

    async def refreshed(self) -> dict[str, ObjectState]:
        """Current objects whose state changed on its own (a rotated secret): they are
        re-applied as a revision. Empty for most kinds."""
        ...

    async def status(self) -> list[dict[str, Any]]:
        """One row per object: ``kind``, ``name``, ``health``, ``revision``, ``message`` and
        whatever the kind adds."""
        ...

    def export_cache(self) -> Any:
        """The handler's planning cache, to be pickled with the manifest cache (None: none)."""
        ...

    def adopt_cache(self, exported: Any) -> None:
        """Start from what :meth:`export_cache` gave in an earlier process."""
        ...


@dataclass
class HandlerDeps:
    """What the shipped handlers are built from (the server's runtime parts)."""

    driver: RuntimeDriver
    releases: ReleaseStore
    targets: TargetRecords
    report: Reporter
    secrets: SecretReader | None = None
    volumes: VolumeProvider | None = None
    tasks: TaskMonitor | None = None
    """Where handlers spawn background work (failures are logged and shown in status)."""
    externals: ExternalSink | None = None
    """Where ExternalService objects are registered (the connect layer); None: nowhere."""
    firewall: FirewallSink | None = None
    """Where NetworkPolicy objects are compiled and loaded; None: nowhere (not enforced)."""
    instance_env: dict[str, str] = field(default_factory=dict)
    """Platform values every instance gets in its environment (e.g. ``SOCLE_DNS``)."""
    environment: Callable[[tuple[str, str]], str] | None = None
    """The environment an object ``(kind, name)`` lives in (None: everything in
    ``default``); see :mod:`socle.engine.scopes`."""
    templates: TemplateHook | None = None
    """Renders apps' ``spec.templates`` (the connect layer); None: apps with templates
    cannot start."""
    log_query_check: Callable[[str], str | None] | None = None
    """Why a LogQL query is refused (None: accepted): the log store's parser, for
    AlertRules with ``logQuery``; None: those queries are not checked at plan time."""


class HandlerRegistry:
    """``kind`` -> handler; ``register`` refuses duplicates (like the model registry)."""

    def __init__(self) -> None:
        self._handlers: dict[str, KindHandler] = {}

    def register(self, handler: KindHandler) -> None:
        if handler.kind in self._handlers:
            raise ValueError(f"a handler is already registered for kind {handler.kind}")
        self._handlers[handler.kind] = handler

    def get(self, kind: str) -> KindHandler:
        return self._handlers[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def items(self) -> list[tuple[str, KindHandler]]:
        return list(self._handlers.items())

    def values(self) -> list[KindHandler]:
        return list(self._handlers.values())


def build_handlers(deps: HandlerDeps) -> HandlerRegistry:
    """The handlers of the kinds Socle ships (one entry per kind)."""
    from socle.engine.kinds.alertrule import AlertRuleHandler, SLOHandler
    from socle.engine.kinds.app import AppHandler
    from socle.engine.kinds.external import ExternalServiceHandler
    from socle.engine.kinds.networkpolicy import NetworkPolicyHandler
    from socle.engine.kinds.route import RouteHandler
    from socle.engine.kinds.volume import VolumeHandler

    registry = HandlerRegistry()
    registry.register(AppHandler(deps))
    registry.register(VolumeHandler(deps))
    registry.register(ExternalServiceHandler(deps))
    registry.register(AlertRuleHandler(deps))
    registry.register(SLOHandler(deps))
    registry.register(RouteHandler(deps))
    registry.register(NetworkPolicyHandler(deps))
    return registry
