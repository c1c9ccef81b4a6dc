"""The registry of manifest kinds: adding a kind is one entry here (and its model module).

The loader, the overlays and the JSON Schema all read this table, so a new kind is loaded,
patched per environment, validated and offered to editors without other changes.
"""

from __future__ import annotations

from pydantic import BaseModel

from socle.model.app import App

API_VERSIONS: tuple[str, ...] = ("socle/v1",)
"""Accepted ``apiVersion`` values, newest first."""

KINDS: dict[str, type[BaseModel]] = {
    "App": App,
}
"""``kind`` -> pydantic model. Each model has ``api_version``, ``kind``, ``metadata.name``."""
