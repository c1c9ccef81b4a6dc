"""The planner: a pure function from (desired, current) to an ordered list of actions.

Nothing here touches the disk, the runtime or the store, so plans can be tested from data
and recomputed cheaply. ``current`` is what the last apply recorded as each app's target;
drift of *instances* from targets is the controller's job, not the plan's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from socle.engine.diff import FieldChange, diff


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


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

    @property
    def depends_on(self) -> list[str]:
        deps: list[str] = self.manifest.get("spec", {}).get("dependsOn", [])
        return deps

    @property
    def strategy(self) -> str:
        return str(self.manifest.get("spec", {}).get("update", {}).get("strategy", "rolling"))

    def comparable(self) -> dict[str, Any]:
        return {"release": self.release, "secrets": self.secrets, **self.manifest}


@dataclass(frozen=True)
class Change:
    action: Action
    kind: str
    name: str
    fields: list[FieldChange] = field(default_factory=list)
    reason: str = ""

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


def dependency_order(apps: Mapping[str, AppState]) -> list[str]:
    """Names with dependencies first (Kahn's algorithm, ties by name for stable plans).

    Dependencies on apps outside ``apps`` are ignored here; the model layer refuses them.
    Cycles are refused by the model layer too; any left are appended in name order.
    """
    indegree = {name: 0 for name in apps}
    dependents: dict[str, list[str]] = {name: [] for name in apps}
    for name, app in apps.items():
        for dep in app.depends_on:
            if dep in apps:
                indegree[name] += 1
                dependents[dep].append(name)
    ready = sorted(name for name, deg in indegree.items() if deg == 0)
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        released = []
        for child in dependents[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                released.append(child)
        if released:
            ready = sorted(ready + released)
    if len(order) < len(apps):
        order.extend(sorted(set(apps) - set(order)))
    return order


def plan(desired: Mapping[str, AppState], current: Mapping[str, AppState]) -> Plan:
    """Every create/update/replace/delete needed to go from ``current`` to ``desired``.

    Creates and updates come in dependency order; deletes come last, dependents first.
    An app whose instance template changes is ``replace``d when its update strategy is
    ``recreate`` (old instances stop before new ones start), else ``update``d (rolling).
    """
    changes: list[Change] = []
    unchanged = 0
    for name in dependency_order(desired):
        want = desired[name]
        have = current.get(name)
        if have is None:
            changes.append(Change(Action.CREATE, "App", name, reason="new app"))
            continue
        if have.digest == want.digest:
            unchanged += 1
            continue
        fields = diff(have.comparable(), want.comparable())
        if not fields:
            unchanged += 1
            continue
        if have.template != want.template and want.strategy == "recreate":
            action, reason = Action.REPLACE, "instance template changed; strategy recreate"
        elif have.template != want.template:
            action, reason = Action.UPDATE, "rolling update to new instances"
        else:
            action, reason = Action.UPDATE, "in place (no new instances)"
        changes.append(Change(action, "App", name, fields, reason))
    removed = {name: app for name, app in current.items() if name not in desired}
    for name in reversed(dependency_order(removed)):
        changes.append(Change(Action.DELETE, "App", name, reason="not in manifests"))
    return Plan(changes, unchanged)
