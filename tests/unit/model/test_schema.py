"""The JSON Schema: well formed, discriminated on kind, and accepting the example manifests.

``jsonschema`` is not a dependency, so the example documents are checked with a small walker
that follows ``$ref``/``anyOf``/``oneOf`` and enforces ``additionalProperties: false``,
``required`` and ``const`` -- what an editor needs to flag typos.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from socle.model.kinds import default_kinds
from socle.model.loader import load
from socle.model.schema import json_schema

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


def test_shape() -> None:
    schema = json_schema()
    json.dumps(schema)  # JSON-ready
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    kinds = list(default_kinds())
    assert schema["oneOf"] == [{"$ref": f"#/$defs/{kind}"} for kind in kinds]
    assert schema["discriminator"] == {
        "propertyName": "kind",
        "mapping": {kind: f"#/$defs/{kind}" for kind in kinds},
    }
    assert kinds[:3] == ["App", "Volume", "ExternalService"] and "AlertRule" in kinds
    assert "Source" in kinds
    defs: dict[str, Any] = schema["$defs"]  # type: ignore[assignment]
    assert {"App", "Volume"} <= set(defs) and set(default_kinds()) <= set(defs)
    app = defs["App"]
    assert app["additionalProperties"] is False
    assert set(app["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert app["properties"]["kind"]["const"] == "App"
    assert app["properties"]["apiVersion"]["const"] == "socle/v1"
    assert "dependsOn" in defs["AppSpec"]["properties"]
    assert defs["Metadata"]["properties"]["name"]["pattern"].startswith("^[a-z0-9]")


def test_every_ref_resolves() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert _resolve(schema, ref), ref


def _resolve(schema: dict[str, Any], ref: str) -> Any:
    node: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _check(schema: dict[str, Any], node: dict[str, Any], value: Any, path: str) -> list[str]:
    if "$ref" in node:
        return _check(schema, _resolve(schema, node["$ref"]), value, path)
    for key in ("anyOf", "oneOf"):
        if key in node:
            results = [_check(schema, branch, value, path) for branch in node[key]]
            return [] if any(not r for r in results) else min(results, key=len)
    if "const" in node and value != node["const"]:
        return [f"{path}: {value!r} is not {node['const']!r}"]
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        errors = [f"{path}: missing {r}" for r in node.get("required", []) if r not in value]
        props = node.get("properties", {})
        for key, item in value.items():
            if key in props:
                errors += _check(schema, props[key], item, f"{path}.{key}")
            elif node.get("additionalProperties") is False:
                errors.append(f"{path}.{key}: not allowed")
            elif isinstance(node.get("additionalProperties"), dict):
                errors += _check(schema, node["additionalProperties"], item, f"{path}.{key}")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: not an array"]
        return [
            e for i, v in enumerate(value) for e in _check(schema, node["items"], v, f"{path}[{i}]")
        ]
    return []


def _documents() -> list[tuple[str, Any]]:
    files = sorted(QUICKSTART.rglob("*.yaml"))
    return [
        (str(f.relative_to(QUICKSTART)), d)
        for f in files
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]


@pytest.mark.parametrize(
    ("name", "document"), [d for d in _documents() if "environments" not in d[0]]
)
def test_example_manifests_match_the_schema(name: str, document: Any) -> None:
    schema = json_schema()
    assert _check(schema, schema, document, "") == []


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_rendered_manifests_match_the_schema(env: str) -> None:
    schema = json_schema()
    for document in load(QUICKSTART, env).rendered():
        assert _check(schema, schema, document, "") == []


def test_typos_are_caught_by_the_schema() -> None:
    schema = json_schema()
    doc = {
        "apiVersion": "socle/v1",
        "kind": "App",
        "metadata": {"name": "a"},
        "spec": {"replica": 1},
    }
    errors = _check(schema, schema, doc, "")
    assert ".spec.replica: not allowed" in errors
    assert ".spec: missing run" in errors
