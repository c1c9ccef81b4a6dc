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
from socle.units import parse_vault_duration

INT64_MAX = 2**63 - 1


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
    """Vault's TTL syntax (see :func:`socle.units.parse_vault_duration`)."""
    try:
        return parse_vault_duration(value)
    except ValueError as exc:
        raise bad_input(name, value, str(exc)) from None


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
