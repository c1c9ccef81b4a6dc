"""Environment overlays: kustomize-style strategic merge patches on plain manifest data.

A patch document names its target by ``kind`` and ``metadata.name``. Mappings merge key by
key, recursively; lists and scalars replace what was there; ``null`` deletes the key. The
merge is done on plain data before validation, so the patched object is validated exactly
like a base one. Every path a patch sets or deletes is remembered with the patch's
location, so that an error in the result points at the patch line that caused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from socle.model.yamlsource import PathPart

S = TypeVar("S")
"""Where a value came from (the loader's source type)."""

Path = tuple[PathPart, ...]


class Owners(Generic[S]):
    """Which patch last set or deleted each path of an object."""

    def __init__(self) -> None:
        self._by_path: dict[Path, S] = {}

    def set(self, path: Path, source: S) -> None:
        self._by_path[path] = source

    def find(self, path: Path) -> tuple[S, Path] | None:
        """The source owning ``path`` or its nearest ancestor, with that ancestor's path."""
        for end in range(len(path), 0, -1):
            source = self._by_path.get(path[:end])
            if source is not None:
                return source, path[:end]
        return None


def merge(
    base: Mapping[object, object],
    patch: Mapping[object, object],
    source: S,
    owners: Owners[S],
    at: Path = (),
) -> dict[object, object]:
    """A new mapping: ``base`` with ``patch`` applied; neither input is modified.

    Recursion follows the patch, whose depth the YAML reader has already bounded.
    """
    out = dict(base)
    for key, value in patch.items():
        path: Path = (*at, key) if isinstance(key, str | int) else at
        current = out.get(key)
        if value is None:
            out.pop(key, None)
            owners.set(path, source)
        elif isinstance(value, dict):
            if not isinstance(current, dict):
                owners.set(path, source)
                current = {}
            out[key] = merge(current, value, source, owners, path)
        else:
            out[key] = value
            owners.set(path, source)
    return out
