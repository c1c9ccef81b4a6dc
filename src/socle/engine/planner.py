"""The planner: a pure function from (desired, current) to an ordered list of actions.

Nothing here touches the disk, the runtime or the store, so plans can be tested from data
and recomputed cheaply. ``current`` is what the last apply recorded as each object's target;
drift of *instances* from targets is the kind handlers' job, not the plan's. Objects are
addressed by ``(kind, name)`` and the planner names no kind: each kind's handler turns its
objects into :class:`ObjectState` values (``AppState`` is the App kind's).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from socle.engine.diff import FieldChange, diff
from socle.errors import DeleteAllRefused
from socle.model.kinds import ObjectRef, format_reference, parse_reference


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


class ObjectState(Protocol):
    """One object as the planner sees it; each kind's handler makes these.

    The planner knows nothing else about kinds: equal ``digest`` means no change, else
    ``comparable()`` of both sides gives the field-level diff and :meth:`change` says how
    the kind applies it (update in place, rolling update, replace). A state may also have a
    ``create_reason`` attribute: what a plan says when the object is new (NetworkPolicy: the
    rules it adds) instead of "new <kind>".
    """

    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def digest(self) -> str: ...

    def dependencies(self) -> Sequence[ObjectRef]:
        """Objects that must be applied before this one (and deleted after it)."""
        ...

    def comparable(self) -> dict[str, Any]:
        """What a plan diffs: the rendered object plus what the kind derives from it."""
        ...

    def change(self, old: Any) -> tuple[Action, str]:
        """How going from ``old`` (same kind and name, other digest) to this is applied."""
        ...


@dataclass(frozen=True)
class AppState:
    """One app as the planner sees it: its rendered manifest and what identifies it."""

    name: str
    manifest: dict[str, Any]
    """The rendered App (camelCase JSON), secret values never included."""
    release: str
    template: str
    """Digest of everything that shapes an instance; a change means new instances."""
    digest: str
    """Digest of manifest + release + template: equal digests mean no change."""
    secrets: dict[str, int] = field(default_factory=dict)
    """Version of each referenced secret (``PATH#KEY``); values never appear here."""

    kind: ClassVar[str] = "App"

    @property
    def depends_on(self) -> list[str]:
        deps: list[str] = self.manifest.get("spec", {}).get("dependsOn", [])
        return deps

    def dependencies(self) -> list[ObjectRef]:
        spec = self.manifest.get("spec", {})
        found = [parse_reference(dep) for dep in spec.get("dependsOn", [])]
        found += [("Volume", mount["name"]) for mount in spec.get("volumes", [])]
        return found

    @property
    def strategy(self) -> str:
        return str(self.manifest.get("spec", {}).get("update", {}).get("strategy", "rolling"))

    def comparable(self) -> dict[str, Any]:
        return {"release": self.release, "secrets": self.secrets, **self.manifest}

    def change(self, old: Any) -> tuple[Action, str]:
        if old.template != self.template and self.strategy == "recreate":
            return Action.REPLACE, "instance template changed; strategy recreate"
        if old.template != self.template:
            return Action.UPDATE, "rolling update to new instances"
        return Action.UPDATE, "in place (no new instances)"


@dataclass(frozen=True)
class Change:
    action: Action
    kind: str
    name: str
    fields: list[FieldChange] = field(default_factory=list)
    reason: str = ""

    @property
    def ref(self) -> ObjectRef:
        return (self.kind, self.name)

    @property
    def label(self) -> str:
        """How users write it: ``api`` for an App, ``Volume/data`` for others."""
        return format_reference(self.ref)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "kind": self.kind,
            "name": self.name,
            "reason": self.reason,
            "fields": [f.to_dict() for f in self.fields],
        }


@dataclass(frozen=True)
class Plan:
    changes: list[Change]
    unchanged: int

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        counts = {a.value: 0 for a in Action}
        for change in self.changes:
            counts[change.action.value] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": [c.to_dict() for c in self.changes],
            "counts": self.counts(),
            "unchanged": self.unchanged,
        }


def dependency_order(states: Mapping[ObjectRef, ObjectState]) -> list[ObjectRef]:
    """Objects with dependencies first (Kahn's algorithm, ties by (kind, name) for stable
    plans), across kinds: ``Volume/data`` comes before the App that mounts it.

    Dependencies on objects outside ``states`` are ignored here; the model layer refuses
    them. Cycles are refused by the model layer too; any left are appended in order.
    """
    indegree = dict.fromkeys(states, 0)
    dependents: dict[ObjectRef, list[ObjectRef]] = {ref: [] for ref in states}
    for ref, state in states.items():
        for dep in set(state.dependencies()):
            if dep in states and dep != ref:
                indegree[ref] += 1
                dependents[dep].append(ref)
    ready = [ref for ref, deg in indegree.items() if deg == 0]
    heapq.heapify(ready)
    order: list[ObjectRef] = []
    while ready:
        ref = heapq.heappop(ready)
        order.append(ref)
        for child in dependents[ref]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, child)
    if len(order) < len(states):
        order.extend(sorted(set(states) - set(order)))
    return order


def plan(
    desired: Mapping[ObjectRef, ObjectState],
    current: Mapping[ObjectRef, ObjectState],
    *,
    allow_delete_all: bool = False,
) -> Plan:
    """Every create/update/replace/delete needed to go from ``current`` to ``desired``.

    Both map ``(kind, name)`` to the kind's :class:`ObjectState`. Creates and updates come
    in dependency order across kinds; deletes come last, dependents first (an App before
    the Volume it mounts). How a changed object is applied is its kind's decision
    (:meth:`ObjectState.change`).

    A plan that would delete every current object and keep none (``apply`` of an empty or
    wrong folder) raises :class:`~socle.errors.DeleteAllRefused` unless
    ``allow_delete_all``.
    """
    if current and not desired and not allow_delete_all:
        raise DeleteAllRefused(
            f"this plan would delete every object ({len(current)}) and create none",
            hint="check the path and --env; to really delete everything pass "
            "--allow-delete-all (API: allow_delete_all)",
        )
    changes: list[Change] = []
    unchanged = 0
    for ref in dependency_order(desired):
        want = desired[ref]
        have = current.get(ref)
        kind, name = ref
        if have is None:
            # A kind may say more than "new <kind>" (NetworkPolicy: the rules it adds).
            reason = getattr(want, "create_reason", None) or f"new {kind.lower()}"
            changes.append(Change(Action.CREATE, kind, name, reason=str(reason)))
            continue
        if have.digest == want.digest:
            unchanged += 1
            continue
        fields = diff(have.comparable(), want.comparable())
        if not fields:
            unchanged += 1
            continue
        action, reason = want.change(have)
        changes.append(Change(action, kind, name, fields, reason))
    removed = {ref: state for ref, state in current.items() if ref not in desired}
    for kind, name in reversed(dependency_order(removed)):
        changes.append(Change(Action.DELETE, kind, name, reason="not in manifests"))
    return Plan(changes, unchanged)
