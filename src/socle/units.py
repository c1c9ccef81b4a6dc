"""Durations ("500ms", "10s", "1m30s") and sizes ("256Mi", "1G") as users write them.

The one module for units: manifests use :func:`parse_duration` (units ms to d, no sign);
the Vault-compatible API uses :func:`parse_vault_duration` (Vault's syntax: whole seconds,
``"7d"``, or a Go duration such as ``"1h30m"``, ``"-1.5h"``, ``"300ms"``). Both scan with
:func:`scan_duration`.

Every parser refuses what would fail later instead of now: NaN and infinities (YAML's
``.nan``, ``.inf``), negative values, and values beyond a sane bound (a duration over a
year, a size over a pebibyte, more than 1024 cores), which would overflow a timer, a
cgroup file or an integer somewhere downstream.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|k|B)?$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "K": 1000,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m)?$")

GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
"""Units of Go's ``time.ParseDuration`` (what Vault accepts after its own forms)."""
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")

MAX_VAULT_DURATION_SECONDS = 100 * 365 * 24 * 3600
"""Anything longer is a typo or an attack on date arithmetic, not a real TTL."""


def scan_duration(text: str, part: re.Pattern[str], units: dict[str, float]) -> float | None:
    """The sum of ``part`` matches (number, unit) that cover all of ``text``; None if
    anything else is in it (or it is empty)."""
    pos = 0
    total = 0.0
    while pos < len(text):
        match = part.match(text, pos)
        if match is None:
            return None
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    return total if pos else None


def parse_vault_duration(value: object) -> float:
    """Seconds, signed, from what Vault accepts for a TTL: ``3600``, ``"3600"``, ``"7d"``
    or a Go duration (``"1h30m"``, ``"-1.5h"``, ``"0"``). ValueError says why not."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > MAX_VAULT_DURATION_SECONDS:
            raise ValueError("duration out of range")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration")
    text = value.strip()
    if len(text) > 64:
        raise ValueError("duration too long")
    if re.fullmatch(r"[+-]?\d+", text):
        seconds = float(int(text))
    elif re.fullmatch(r"[+-]?\d+d", text):
        seconds = float(int(text[:-1]) * 86400)
    else:
        sign = -1.0 if text[:1] == "-" else 1.0
        body = text[1:] if text[:1] in ("+", "-") else text
        scanned = 0.0 if body == "0" else scan_duration(body, _GO_PART, GO_UNITS)
        if scanned is None:
            raise ValueError(f'time: invalid duration "{text}"')
        seconds = sign * scanned
    if abs(seconds) > MAX_VAULT_DURATION_SECONDS:
        raise ValueError("duration out of range")
    return seconds


MAX_DURATION = 365 * 86400.0
"""One year: longer timers are mistakes (and overflow some of the clocks they feed)."""
MAX_SIZE = 1024**5
"""One pebibyte."""
MAX_CPU = 1024.0


def _bounded_duration(seconds: float, shown: object) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {shown!r}: it must be a finite number")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {shown!r} is longer than a year (365d)")
    return seconds


def parse_duration(value: object) -> float:
    """Seconds from a number or a Go-style duration string; refuses negatives and junk."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '10s'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"duration {value!r} is longer than a year (365d)") from None
        return _bounded_duration(seconds, value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a duration must be a number of seconds or a string like '10s'")
    total = scan_duration(value.strip(), _DURATION_PART, _DURATION_UNITS)
    if total is None:
        raise ValueError(
            f"invalid duration {value!r}: use forms like '500ms', '10s', '1m30s', '2h'"
        )
    return _bounded_duration(total, value)


def parse_size(value: object) -> int:
    """Bytes from an int or a Kubernetes-style quantity ("128Mi", "1G")."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '128Mi'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if not match:
            raise ValueError(f"invalid size {value!r}: use forms like '128Mi', '1Gi', '500M'")
        try:  # exact decimal arithmetic: no float overflow to inf, no rounding surprises
            size = int(Decimal(match.group(1)) * _SIZE_UNITS[match.group(2)])
        except (InvalidOperation, OverflowError):
            raise ValueError(f"invalid size {value!r}") from None
    else:
        raise ValueError("a size must be a number of bytes or a string like '128Mi'")
    if size <= 0:
        raise ValueError("a size must be positive")
    if size > MAX_SIZE:
        raise ValueError(f"size {value!r} is larger than 1Pi")
    return size


def parse_cpu(value: object) -> float:
    """Cores from a number or a millicore string ("500m" is half a core)."""
    if isinstance(value, bool):
        raise ValueError("cpu must be a number of cores or a string like '500m'")
    if isinstance(value, int | float):
        try:
            cores = float(value)
        except OverflowError:
            raise ValueError(f"cpu {value!r} is more than {MAX_CPU:g} cores") from None
    elif isinstance(value, str) and (match := _CPU.fullmatch(value.strip())):
        cores = float(match.group(1)) / (1000 if match.group(2) else 1)
    else:
        raise ValueError(f"invalid cpu {value!r}: use cores (0.5, 2) or millicores ('500m')")
    if not math.isfinite(cores):
        raise ValueError(f"invalid cpu {value!r}: it must be a finite number")
    if cores <= 0:
        raise ValueError("cpu must be positive")
    if cores > MAX_CPU:
        raise ValueError(f"cpu {value!r} is more than {MAX_CPU:g} cores")
    return cores


def format_duration(seconds: float) -> str:
    """The shortest string that parses back to exactly ``seconds`` ("500ms", "10s", "1.5s").

    Rendered manifests are loaded again and compared, so the text must round-trip.
    """
    if seconds and seconds < 1:
        millis = f"{round(seconds * 1000)}ms"
        if parse_duration(millis) == seconds:
            return millis
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{Decimal(repr(seconds)):f}s"


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` for whole seconds: ``0s``, ``1h0m0s``, ``90s``."""
    total = int(seconds)
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "duration: seconds, or '500ms', '10s', '1m30s', '2h'",
        }
    ),
]
"""Seconds, written as "10s" in manifests."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}],
            "description": "size: bytes, or '128Mi', '1Gi', '500M'",
        }
    ),
]
"""Bytes, written as "128Mi" in manifests."""

Cpu = Annotated[
    float,
    BeforeValidator(parse_cpu),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?m?$"}, {"type": "number"}],
            "description": "cores: 0.5, 2, or millicores '500m'",
        }
    ),
]
"""Cores, written as "500m" or 0.5 in manifests."""
