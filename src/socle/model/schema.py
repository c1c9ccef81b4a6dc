"""JSON Schema (draft 2020-12) of every manifest kind, for editors and CI linters.

Generated from the same pydantic models the loader validates with, so the two cannot drift.
Documents are ``oneOf`` the kinds; each kind fixes ``kind`` and ``apiVersion`` with ``const``,
so exactly one branch can match, and ``discriminator`` tells tools that understand it
(yaml-language-server, OpenAPI tooling) to pick the branch by ``kind``.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from socle.model.kinds import KindRegistry, default_kinds

SCHEMA_ID = "urn:socle:schema:manifest:v1"


def json_schema(kinds: KindRegistry | None = None) -> dict[str, object]:
    """The schema as a JSON-ready dict; ``$defs`` holds every kind and its parts."""
    registry = kinds if kinds is not None else default_kinds()
    models = {kind: info.model for kind, info in registry.items()}
    refs, definitions = models_json_schema(
        [(model, "validation") for model in models.values()],
        by_alias=True,
        ref_template="#/$defs/{model}",
        title="Socle manifest",
    )
    branches: list[dict[str, Any]] = []
    mapping: dict[str, str] = {}
    for kind, model in models.items():
        ref = refs[(model, "validation")]
        branches.append(ref)
        mapping[kind] = ref["$ref"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Socle manifest",
        "description": "One document of a Socle manifest repository (apiVersion socle/v1).",
        "oneOf": branches,
        "discriminator": {"propertyName": "kind", "mapping": mapping},
        "$defs": definitions.get("$defs", {}),
    }
