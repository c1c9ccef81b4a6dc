"""Compact JSON for the hot path (response bodies, audit lines), with orjson.

:func:`dumps` gives what ``json.dumps(value, separators=(",", ":"), default=default)``
gives (ASCII only, non-ASCII as ``\\uXXXX``), about ten times faster. orjson handles the
common case; anything it would write differently falls back to the standard library:
non-ASCII text, integers beyond 64 bits, non-string keys, and types orjson would serialise
on its own (dataclasses, datetimes: they go to ``default`` as with ``json``). Float
formatting may differ in spelling (``1e16`` against ``1e+16``), never in value.
Non-finite floats (``NaN``) are refused at the API's input (see ``http``), so orjson's
``null`` for them never stands in for a value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        out = orjson.dumps(value, default=default, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: big ints, non-string keys, unknown types
        out = b"\x80"
    if out.isascii():
        return out
    return json.dumps(value, separators=(",", ":"), default=default).encode()
