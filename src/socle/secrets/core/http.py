"""The Vault-compatible HTTP API as a plain ASGI 3 app (no framework on the hot path).

Per request: decode and check the path once (:mod:`paths`), map the method to an
operation (``GET ?list=true`` and ``LIST`` are list), read the body with a hard size limit
(refused while reading, from ``Content-Length`` or as chunks arrive), parse JSON objects
only, and hand over to the pipeline. Errors are ``{"errors": [...]}`` with Vault's status
codes; empty answers are 204.

The app works both standalone (``/v1/...``) and mounted under ``/v1`` by another ASGI app.
It also answers ASGI lifespan events by starting and stopping the core.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from socle.secrets.backend import Operation, SecretsError
from socle.secrets.core import _json
from socle.secrets.core.errors import SealedError
from socle.secrets.core.paths import api_path
from socle.secrets.core.pipeline import Outcome, error_outcome
from socle.secrets.core.sys_seal import RAW
from socle.units import parse_vault_duration

if TYPE_CHECKING:
    from socle.secrets.core import SecretsCore

log = logging.getLogger("socle.secrets")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_METHODS = {
    "GET": Operation.READ,
    "LIST": Operation.LIST,
    "POST": Operation.UPDATE,
    "PUT": Operation.UPDATE,
    "DELETE": Operation.DELETE,
    "PATCH": Operation.PATCH,
}
_BASE_HEADERS = [(b"cache-control", b"no-store")]
_JSON = b"application/json"


class ClientDisconnected(Exception):
    pass


class VaultHTTP:
    def __init__(self, core: SecretsCore, max_body_bytes: int) -> None:
        self._core = core
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._core.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._core.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        try:
            outcome = await self._handle(scope, receive, method)
        except ClientDisconnected:
            return
        except SecretsError as exc:
            outcome = error_outcome(exc)
        except Exception:
            log.exception("internal error in the secrets HTTP layer")
            outcome = Outcome(500, {"errors": ["internal error"]})
        await self._send(send, outcome, head=method == "HEAD")

    async def _handle(self, scope: Scope, receive: Receive, method: str) -> Outcome:
        path = api_path(scope.get("raw_path"), scope.get("path", ""))
        raw_query = scope.get("query_string", b"")
        query = (
            dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))
            if raw_query
            else {}
        )
        token = ""
        length: int | None = None
        wrap_ttl = 0
        for name, value in scope.get("headers", ()):
            if name == b"x-vault-token":
                token = value.decode("latin-1").strip()
            elif name == b"authorization" and not token:
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = credentials.strip()
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"x-vault-wrap-ttl":
                wrap_ttl = _wrap_ttl(value.decode("latin-1"))

        async def body() -> dict[str, Any]:
            return _parse_json(await self._read_body(receive, length))

        raw = RAW.get(path)
        if raw is not None:
            return await raw(self._core, method, query, body, token)
        operation = _METHODS.get(method)
        if operation is None:
            raise SecretsError(405, "unsupported operation")
        if operation is Operation.READ and query.get("list", "").lower() in ("true", "1"):
            operation = Operation.LIST
        pipeline = self._core.pipeline
        if pipeline is None:
            raise SealedError()
        if operation is Operation.READ and query.get("help", "").lower() in ("true", "1"):
            return await pipeline.help(path, token)
        if operation in (Operation.READ, Operation.LIST):
            data: dict[str, Any] = {k: v for k, v in query.items() if k != "list"}
        else:
            data = await body()
            if operation is Operation.DELETE:
                data = {**query, **data}
        client = scope.get("client")
        return await pipeline.handle(
            operation,
            path,
            data,
            query,
            token=token,
            remote_address=client[0] if client else "",
            wrap_ttl=wrap_ttl,
        )

    async def _read_body(self, receive: Receive, length: int | None) -> bytes:
        if length is not None and length > self._max:
            raise SecretsError(413, "http: request body too large")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                raise SecretsError(413, "http: request body too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _send(self, send: Send, outcome: Outcome, *, head: bool) -> None:
        headers = list(_BASE_HEADERS)
        if outcome.raw is not None:
            payload = outcome.raw
            headers.append((b"content-type", outcome.content_type.encode("latin-1")))
        elif outcome.body is None or outcome.status == 204:
            payload = b""
        else:
            payload = _json.dumps(outcome.body, default=str)
            headers.append((b"content-type", _JSON))
        if outcome.status != 204:
            headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else payload})


def _wrap_ttl(text: str) -> int:
    """``X-Vault-Wrap-TTL``: seconds or a Go duration, as Vault reads it; 0 means none."""
    text = text.strip()
    if not text:
        return 0
    try:
        seconds = parse_vault_duration(text)
    except ValueError as exc:
        raise SecretsError(400, f"error parsing X-Vault-Wrap-TTL header: {exc}") from None
    if seconds < 0:
        raise SecretsError(
            400, "error parsing X-Vault-Wrap-TTL header: requested wrap ttl cannot be negative"
        )
    return int(seconds)


def _parse_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SecretsError(400, f"failed to parse JSON input: {exc}") from None
    if data is None:  # ``bao write -f PATH`` sends ``null``: an empty body
        return {}
    if not isinstance(data, dict):
        raise SecretsError(400, "failed to parse JSON input: the body must be a JSON object")
    return data


def _no_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON (Vault refuses them too)."""
    raise ValueError(f"invalid value {name}")
