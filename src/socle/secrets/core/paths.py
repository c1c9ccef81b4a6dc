"""Request path hygiene: one strict decoding, shared by the ACL check and the router.

The rule that keeps ACLs honest is that the path the ACL sees is byte-for-byte the path the
backend gets. So instead of "cleaning" a hostile path into something else (and hoping the
ACL and the router clean it the same way) we refuse it:

* ``..`` and ``.`` segments, empty segments (``//``), NUL and control characters;
* percent-encoded ``/`` or ``\\`` (``%2f``, ``%5c``) and invalid escapes; ``%2e%2e`` decodes
  to ``..`` and is refused like it;
* anything that is not UTF-8.

Case and trailing slashes are kept exactly: Vault paths are case-sensitive, and a trailing
slash is meaningful for LIST. The ACL additionally checks ``x/`` and ``x`` for non-list
operations (see :mod:`socle.secrets.core.policy`) so a backend that folds a trailing slash
cannot be used to step around a ``deny``.
"""

from __future__ import annotations

import re

from socle.secrets.backend import SecretsError

_HEX = "0123456789abcdefABCDEF"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FORBIDDEN_ENCODED = {0x2F, 0x5C}


def _bad(reason: str) -> SecretsError:
    return SecretsError(400, f"invalid request path: {reason}")


def _percent_decode(data: bytes) -> str:
    if b"%" not in data:  # the common case: nothing to decode
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("not valid UTF-8") from None
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x25:  # '%'
            pair = data[i + 1 : i + 3].decode("latin-1")
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise _bad("invalid percent-encoding")
            value = int(pair, 16)
            if value in _FORBIDDEN_ENCODED:
                raise _bad("encoded slashes are not allowed")
            out.append(value)
            i += 3
        else:
            out.append(byte)
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("not valid UTF-8") from None


def api_path(raw_path: bytes | None, path: str) -> str:
    """The API path below ``/v1`` without a leading slash (``secret/data/app``).

    ``raw_path`` is the ASGI ``raw_path`` (still percent-encoded) when the server gives it;
    ``path`` is the decoded ``scope["path"]``. Both ``/v1/...`` and ``/...`` are accepted so
    the app works standalone and when mounted at ``/v1``.
    """
    decoded = _percent_decode(raw_path.split(b"?", 1)[0]) if raw_path is not None else path
    if decoded.startswith("/v1/"):
        decoded = decoded[3:]
    elif decoded == "/v1":
        decoded = "/"
    if not decoded.startswith("/"):
        raise _bad("must start with '/'")
    result = decoded[1:]
    check_path(result)
    return result


def check_path(path: str) -> None:
    """Refuse hostile paths (see the module docstring); raises SecretsError(400)."""
    if _CONTROL.search(path):
        raise _bad("control characters are not allowed")
    if "//" in path or path.startswith("/"):
        raise _bad("empty path segments are not allowed")
    if "." in path and any(segment in (".", "..") for segment in path.split("/")):
        raise _bad("'.' and '..' segments are not allowed")
