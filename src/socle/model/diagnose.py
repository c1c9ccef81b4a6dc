"""Turn pydantic's validation errors into field paths and reasons a manifest author can act on.

Pydantic reports where it was in its own schema (``loc``), with union branch tags mixed in
and messages written for programmers. Here each error becomes the path of the YAML keys the
user wrote (``spec.ports[1].name``) and a short reason, with a "did you mean" for misspelt
fields. Line numbers are found by the loader from that path.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_snake

from socle.model.app import FieldError
from socle.model.yamlsource import PathPart

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MISSING = object()

_REASONS = {
    "missing": "required field is missing",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def format_path(parts: Sequence[PathPart]) -> str:
    """``("spec", "ports", 1, "name")`` -> ``spec.ports[1].name``; odd keys are quoted."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def describe(value: object) -> str:
    """A short, safe description of a user value for messages (never a huge repr)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problems_of(
    exc: ValidationError, data: Mapping[object, object], model: type[BaseModel]
) -> list[tuple[tuple[PathPart, ...], str]]:
    """``(path, reason)`` for every error of ``exc``, raised when validating ``data``."""
    found: list[tuple[tuple[PathPart, ...], str]] = []
    for error in exc.errors(include_url=False):
        loc: tuple[PathPart, ...] = tuple(error["loc"])
        kind = error["type"]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc = (*loc, *cause.at)
        path = _user_path(loc, data, keep_last=kind == "missing")
        reason = _reason(error, cause, path, model)
        item = (path, reason)
        if item not in found:
            found.append(item)
    return found


def _reason(error: Any, cause: object, path: tuple[PathPart, ...], model: type[BaseModel]) -> str:
    kind: str = error["type"]
    if kind == "extra_forbidden":
        return _unknown_field(str(path[-1]) if path else "?", known_fields(model, path[:-1]))
    if isinstance(cause, ValueError):
        return str(cause)
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return _REASONS[kind]
    reason = _REASONS.get(kind)
    if reason is None:
        msg = str(error["msg"])
        reason = (
            "expected " + msg[len("Input should be ") :]
            if msg.startswith("Input should be ")
            else msg[:1].lower() + msg[1:]
        )
    return f"{reason} (got {describe(error.get('input'))})"


def _unknown_field(name: str, known: list[str]) -> str:
    reason = f"unknown field {name!r}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        squashed = name.replace("_", "").replace("-", "").lower()
        close = [lowered[squashed]] if squashed in lowered else []
    if close:
        return f"{reason}; did you mean {close[0]!r}?"
    if known:
        return f"{reason}; known fields: {', '.join(known)}"
    return reason


def _user_path(
    loc: tuple[PathPart, ...], data: Mapping[object, object], *, keep_last: bool
) -> tuple[PathPart, ...]:
    """The keys the user wrote, skipping pydantic's union tags and other internal steps."""
    out: list[PathPart] = []
    current: object = data
    for i, part in enumerate(loc):
        if isinstance(current, dict):
            key = _find_key(current, part)
            if key is not _MISSING:
                out.append(typing.cast(PathPart, key))
                current = current[key]
                continue
            if keep_last and i == len(loc) - 1:
                out.append(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            out.append(part)
            current = current[part]
    return tuple(out)


def _find_key(mapping: dict[object, object], part: PathPart) -> object:
    if part in mapping:
        return part
    if isinstance(part, str):
        snake = to_snake(part)
        if snake in mapping:
            return snake
    return _MISSING


def known_fields(model: type[BaseModel], path: Sequence[PathPart]) -> list[str]:
    """Field names (as written in YAML) of the model found at ``path`` below ``model``."""
    current: object = model
    for part in path:
        current = _step(current, part)
        if current is None:
            return []
    target = _model_in(current)
    if target is None:
        return []
    return [info.alias or name for name, info in target.model_fields.items()]


def _step(annotation: object, part: PathPart) -> object:
    annotation = _unwrap(annotation)
    model = _model_in(annotation)
    origin = get_origin(annotation)
    if isinstance(part, int) and origin is list:
        return get_args(annotation)[0]
    if origin is dict:
        return get_args(annotation)[1]
    if model is not None and isinstance(part, str):
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _step(arg, part)
            if found is not None:
                return found
    return None


def _unwrap(annotation: object) -> object:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _model_in(annotation: object) -> type[BaseModel] | None:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
