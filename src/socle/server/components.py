"""Components of the control plane: each starts and stops one part; the list says the order.

A component is anything with a ``name`` and ``async start()`` / ``async stop()``. The
composition root (:func:`socle.server.serve`) builds a :class:`Components` list explicitly,
in dependency order (store, lease, secrets, runtime, engine, API; later gitops, network,
observe: one component each), and

- starts them in that order; if one fails, stops those already started, in reverse, and
  re-raises the failure (nothing is left half-running);
- stops them in reverse order, every one even if an earlier stop failed (each failure is
  logged, the first is re-raised at the end);
- reports each component's state for ``/api/v1/status``.

A component's ``start`` may block for as long as it must (a standby waiting for the leader
lease); a cancelled start counts as a failed start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

log = logging.getLogger("socle.server")


class Component(Protocol):
    """One part of the control plane with a lifecycle."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Bring the part up; raise (after cleaning up what it did) if it cannot."""
        ...

    async def stop(self) -> None:
        """Bring the part down; only called after a successful :meth:`start`."""
        ...


class Components:
    """An ordered registry of components; names are unique."""

    def __init__(self, components: list[Component] | None = None) -> None:
        self._items: list[Component] = []
        self._states: dict[str, str] = {}
        self._started: list[Component] = []
        for component in components or []:
            self.add(component)

    def add(self, component: Component) -> None:
        """Append ``component``: it starts after, and stops before, those already added."""
        if component.name in self._states:
            raise ValueError(f"a component named {component.name!r} is already registered")
        self._items.append(component)
        self._states[component.name] = "stopped"

    def __iter__(self) -> Iterator[Component]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._items]

    def states(self) -> list[dict[str, str]]:
        """``[{"name", "state"}]`` in start order; state is stopped/starting/running/stopping/failed."""
        return [{"name": c.name, "state": self._states[c.name]} for c in self._items]

    async def start(self) -> None:
        for component in self._items:
            self._states[component.name] = "starting"
            try:
                await component.start()
            except BaseException:
                self._states[component.name] = "failed"
                log.info("component %s failed to start; stopping the others", component.name)
                await self.stop()
                raise
            self._states[component.name] = "running"
            self._started.append(component)

    async def stop(self) -> None:
        """Stop what started, last first; every stop runs even if another one fails."""
        first: BaseException | None = None
        while self._started:
            component = self._started.pop()
            self._states[component.name] = "stopping"
            try:
                await component.stop()
            except BaseException as exc:
                log.exception("component %s failed to stop cleanly", component.name)
                self._states[component.name] = "failed"
                first = first or exc
            else:
                self._states[component.name] = "stopped"
        if first is not None:
            raise first


__all__ = ["Component", "Components"]
