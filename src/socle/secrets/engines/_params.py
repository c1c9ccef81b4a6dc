"""Request field parsing with Vault's weak typing, shared by every engine.

Vault clients send the same field in several shapes: ``ttl`` as ``3600``, ``"3600"`` or
``"1h"``; a list as ``["a", "b"]`` or ``"a,b"``; a bool as ``true`` or ``"true"``. Vault
accepts all of them (its ``framework`` decodes "weakly"), so hvac, the CLI and Ansible work
whichever they pick. We do the same here, once, and turn anything else into a 400 that
names the field, so that no engine ever sees a wrong type.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from socle.secrets.backend import Request, SecretsError

INT64_MAX = 2**63 - 1
MAX_DURATION_SECONDS = 100 * 365 * 24 * 3600
"""Anything longer is a typo or an attack on date arithmetic, not a real TTL."""

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def merged(request: Request) -> dict[str, Any]:
    """Query parameters and body as one mapping, body winning, as Vault merges them."""
    out: dict[str, Any] = dict(request.query)
    out.update(request.data)
    return out


def bad_input(name: str, value: object, why: str) -> SecretsError:
    shown = repr(value) if not isinstance(value, str) else value
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return SecretsError(400, f'error converting input {shown} for field "{name}": {why}')


def get_str(data: Mapping[str, Any], name: str, default: str = "") -> str:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise bad_input(name, value, "expected a string")


def get_int(data: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = data.get(name)
    if value is None or value == "":
        return default
    return to_int(name, value)


def to_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise bad_input(name, value, "expected an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise bad_input(name, value, "expected an integer")
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d{1,19}", text):
            raise bad_input(name, value, "expected an integer")
        number = int(text)
    else:
        raise bad_input(name, value, "expected an integer")
    if abs(number) > INT64_MAX:
        raise bad_input(name, value, "value out of range")
    return number


def get_bool(data: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = data.get(name)
    if value is None or value == "":
        return default
    return to_bool(name, value)


def to_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "t", "true"):
            return True
        if lowered in ("0", "f", "false"):
            return False
    raise bad_input(name, value, "expected a boolean")


def get_duration(data: Mapping[str, Any], name: str, default: float = 0.0) -> float:
    """Seconds from ``3600``, ``"3600"``, ``"1h"``, ``"1h30m"`` or ``"7d"`` (Vault's parser)."""
    value = data.get(name)
    if value is None or value == "":
        return default
    seconds = parse_duration(name, value)
    if seconds < 0:
        raise bad_input(name, value, "duration cannot be negative")
    return seconds


def parse_duration(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise bad_input(name, value, "expected a duration")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > MAX_DURATION_SECONDS:
            raise bad_input(name, value, "duration out of range")
        return float(value)
    if not isinstance(value, str):
        raise bad_input(name, value, "expected a duration")
    text = value.strip()
    if len(text) > 64:
        raise bad_input(name, value, "duration too long")
    if re.fullmatch(r"[+-]?\d+", text):
        seconds = float(int(text))
    elif re.fullmatch(r"[+-]?\d+d", text):
        seconds = float(int(text[:-1]) * 86400)
    else:
        seconds = _go_duration(name, text)
    if abs(seconds) > MAX_DURATION_SECONDS:
        raise bad_input(name, value, "duration out of range")
    return seconds


def _go_duration(name: str, text: str) -> float:
    sign = 1.0
    body = text
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    total = 0.0
    position = 0
    while position < len(body):
        match = _GO_DURATION_PART.match(body, position)
        if match is None:
            raise bad_input(name, text, f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if not body:
        raise bad_input(name, text, f'time: invalid duration "{text}"')
    return sign * total


def get_str_list(data: Mapping[str, Any], name: str, *, comma: bool = True) -> list[str] | None:
    """A list of strings, or ``None`` when the field is absent.

    ``comma=True`` is Vault's ``TypeCommaStringSlice`` (``"a, b"`` is two items);
    ``comma=False`` is ``TypeStringSlice``, used for SQL statements that contain commas:
    a lone string there is one item, or a JSON array when it looks like one.
    """
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        if not comma:
            stripped = value.strip()
            if stripped.startswith("["):
                try:
                    decoded = json.loads(stripped)
                except ValueError:
                    decoded = None
                if isinstance(decoded, list):
                    return [_list_item(name, item) for item in decoded]
            return [value] if value else []
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        items = [_list_item(name, item) for item in value]
        if comma:
            return [item.strip() for item in items if item.strip()]
        return items
    raise bad_input(name, value, "expected a list of strings")


def _list_item(name: str, item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, int | float) and not isinstance(item, bool):
        return str(item)
    raise bad_input(name, item, "expected a list of strings")


def get_int_list(data: Mapping[str, Any], name: str) -> list[int]:
    """Vault's ``TypeCommaIntSlice``: ``[1, 2]``, ``"1,2"`` or ``3``."""
    value = data.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [to_int(name, item) for item in value]
    if isinstance(value, str):
        return [to_int(name, part) for part in value.split(",") if part.strip()]
    return [to_int(name, value)]


def get_map(data: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
    raise bad_input(name, value, "expected a map")


def get_str_map(data: Mapping[str, Any], name: str) -> dict[str, str] | None:
    """Vault's ``TypeKVPairs``: values are turned into strings, ``null`` into ``""``."""
    raw = get_map(data, name)
    if raw is None:
        return None
    out: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            out[key] = ""
        elif isinstance(value, str | int | float | bool):
            out[key] = get_str({key: value}, key)
        else:
            raise bad_input(name, value, "expected a map of strings")
    return out
