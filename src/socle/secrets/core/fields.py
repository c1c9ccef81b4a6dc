"""Parsing of Vault-style request fields: durations, booleans, lists, timestamps.

Vault accepts the same field in several spellings (``ttl`` as ``3600``, ``"3600"`` or
``"1h"``; ``policies`` as a JSON list or ``"a,b"``; booleans as ``true`` or ``"true"``)
and hvac relies on that (it sends AppRole ``token_policies`` comma-joined). These helpers
normalise once at the edge of each handler and raise :class:`SecretsError` (400) naming the
field, so handlers work with plain Python values.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from socle.secrets.backend import SecretsError
from socle.units import parse_vault_duration

SYSTEM_MAX_TTL = 32 * 24 * 3600
"""Vault's default and maximum lease/token TTL: 32 days (768h)."""


def parse_duration(value: Any, field: str) -> int:
    """Whole seconds from Vault's TTL syntax: ``3600``, ``"3600"``, ``"7d"``, ``"1h30m"``,
    ``"90s"`` (see :func:`socle.units.parse_vault_duration`); never negative."""
    if value is None or value == "":
        return 0
    try:
        seconds = parse_vault_duration(value)
    except ValueError as exc:
        raise SecretsError(400, f'{field}: {exc} (use 3600, "90s" or "1h")') from None
    if seconds < 0:
        raise SecretsError(400, f"{field}: a duration cannot be negative")
    return int(seconds)


def parse_bool(value: Any, field: str, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "1", "t", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "f", "no"):
        return False
    raise SecretsError(400, f"{field}: expected a boolean, got {value!r}")


def parse_int(value: Any, field: str, default: int = 0) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise SecretsError(400, f"{field}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise SecretsError(400, f"{field}: expected an integer, got {value!r}")


def parse_str_list(value: Any, field: str) -> list[str]:
    """A list from a JSON list or a comma-separated string; blanks dropped, order kept."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise SecretsError(400, f"{field}: expected a list of strings or a comma-separated string")
    out: list[str] = []
    for item in items:
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return out


def parse_str_map(value: Any, field: str) -> dict[str, str]:
    """A string map from a JSON object or a JSON-encoded object string (hvac sends the latter
    for AppRole secret-id ``metadata``)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise SecretsError(400, f"{field}: invalid JSON object: {exc}") from None
    if not isinstance(value, Mapping):
        raise SecretsError(400, f"{field}: expected an object of strings")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise SecretsError(400, f"{field}: keys and values must be strings")
        out[key] = item
    return out


def parse_str(value: Any, field: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise SecretsError(400, f"{field}: expected a string")
    return value


@functools.lru_cache(maxsize=4096)
def rfc3339(epoch: float) -> str:
    """Vault's timestamp format: RFC 3339 with a fraction, UTC. Cached: the same token
    issue times are formatted on every audited request."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_mount_ttls(default_lease_ttl: int, max_lease_ttl: int, *, tuning: bool = False) -> None:
    """A mount's max may exceed the system max (a root CA for ten years needs it); its
    default may not exceed its own max, or the system max when it has none. The messages
    are Vault's: enabling and tuning word the same refusal differently."""
    effective_max = max_lease_ttl or SYSTEM_MAX_TTL
    if default_lease_ttl <= effective_max:
        return
    if tuning:
        raise SecretsError(
            400,
            f"backend max lease TTL of {effective_max} would be less than backend default "
            f"lease TTL of {default_lease_ttl}",
        )
    if max_lease_ttl:
        raise SecretsError(400, "given default lease TTL greater than given max lease TTL")
    raise SecretsError(
        400, f"given default lease TTL greater than system max lease TTL of {SYSTEM_MAX_TTL}"
    )


def clamp_ttl(ttl: int, *limits: int) -> int:
    """The smallest positive among ``ttl`` and the limits (0 means "no limit")."""
    result = ttl
    for limit in limits:
        if limit > 0 and (result <= 0 or result > limit):
            result = limit
    return result
