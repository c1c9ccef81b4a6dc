"""Field-level diffs of JSON-like values, for plans that say exactly what changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_MISSING: Any = object()


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new}


def diff(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Changes from ``old`` to ``new``; mappings recurse, lists recurse when equally long."""
    if old is _MISSING or new is _MISSING:
        return [
            FieldChange(path, None if old is _MISSING else old, None if new is _MISSING else new)
        ]
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key, _MISSING), new.get(key, _MISSING)
            if a != b:
                changes.extend(diff(a, b, f"{path}.{key}" if path else str(key)))
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        changes = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                changes.extend(diff(a, b, f"{path}[{index}]"))
        return changes
    if old == new:
        return []
    return [FieldChange(path, old, new)]
