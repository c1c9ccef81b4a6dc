"""The Consul-compatible HTTP API, served on its own listener (``settings.consul_listen``).

Paths, query flags, JSON shapes and headers follow Consul's HTTP API so that Prometheus's
``consul_sd_configs``, the ``py-consul`` client and consul-template-style tools work:

- ``GET /v1/catalog/services``, ``GET /v1/catalog/service/NAME`` (``?tag=``),
  ``GET /v1/health/service/NAME`` (``?passing``, ``?tag=``);
- ``GET /v1/agent/self``, ``GET /v1/agent/services``,
  ``PUT /v1/agent/service/register``, ``PUT /v1/agent/service/deregister/ID``;
- ``GET|PUT|DELETE /v1/kv/KEY`` (``?recurse``, ``?keys``, ``?separator``, ``?raw``,
  ``?cas``, ``?flags``); values are base64 in JSON;
- ``GET /v1/status/leader``.

Every answer carries ``X-Consul-Index``; a read with ``?index=N`` blocks until the index is
past N or ``?wait=`` (default 5m, at most 10m) runs out. Tokens are the platform API's, sent
as ``X-Consul-Token`` or ``Authorization: Bearer``; without a valid one every path answers
403 (deny by default, like Consul with ACLs on). Errors are plain text, like Consul's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from socle.api.tokens import TokenStore
from socle.errors import SocleError
from socle.network.agent import parse_registration
from socle.network.consul import (
    Node,
    catalog_services,
    consul_services,
    local_node,
    matches_tags,
)
from socle.network.kv import MAX_VALUE_BYTES, KVEntry
from socle.network.registry import MAX_WAIT_SECONDS
from socle.network.service import NetworkService
from socle.units import parse_duration

log = logging.getLogger("socle.api")

DEFAULT_WAIT = 300.0
MAX_BODY = MAX_VALUE_BYTES + 1
MAX_JSON_BODY = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _token(request: Request) -> str | None:
    token = request.headers.get("x-consul-token", "").strip()
    if token:
        return token
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def _flag(request: Request, name: str) -> bool:
    """Consul's boolean query flags count by presence (``?recurse``, ``?recurse=true``)."""
    value = request.query_params.get(name)
    return value is not None and value.lower() not in ("false", "0")


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise _Refused(400, f"Invalid {name} parameter: {raw[:40]!r} is not an unsigned integer")
    return int(raw)


def _wait(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return DEFAULT_WAIT
    try:
        return min(parse_duration(raw), MAX_WAIT_SECONDS)
    except ValueError:
        raise _Refused(400, f"Invalid wait time: {raw[:40]!r}") from None


def _headers(index: int) -> dict[str, str]:
    return {
        "X-Consul-Index": str(index),
        "X-Consul-KnownLeader": "true",
        "X-Consul-LastContact": "0",
        "X-Consul-Effective-Consistency": "leader",
    }


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"Request body too large: at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"Request body too large: at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class ConsulApi:
    """The handlers, bound to one control plane's network service and tokens."""

    def __init__(self, network: NetworkService, tokens: TokenStore, node: Node | None = None):
        self.network = network
        self.tokens = tokens
        self.node = node or local_node()

    @property
    def registry(self) -> Any:
        return self.network.registry

    def guarded(self, handler: Handler) -> Handler:
        """Token first (403 without a valid one), then the handler; errors as plain text."""

        async def run(request: Request) -> Response:
            try:
                token = _token(request)
                if token is None or await self.tokens.check(token) is None:
                    raise _Refused(403, "Permission denied: ACL not found")
                return await handler(request)
            except _Refused as exc:
                return Response(exc.text, status_code=exc.status, media_type="text/plain")
            except SocleError as exc:
                status = exc.http_status if exc.http_status < 500 else 500
                return Response(exc.message, status_code=status, media_type="text/plain")

        return run

    async def _catalog_block(self, request: Request) -> int:
        index = _int_param(request, "index")
        if index is None:
            return int(self.registry.index)
        return int(await self.registry.wait(index, _wait(request)))

    # -- catalog and health -------------------------------------------------------------

    async def catalog_services(self, request: Request) -> Response:
        index = await self._catalog_block(request)
        body = catalog_services(self.registry.instances())
        return JSONResponse(body, headers=_headers(index))

    def _services(self, request: Request, name: str, *, passing: bool) -> list[Any]:
        tags = request.query_params.getlist("tag")
        entries = self.registry.instances(name, healthy_only=passing)
        return [s for s in consul_services(entries) if matches_tags(s, tags)]

    async def catalog_service(self, request: Request) -> Response:
        index = await self._catalog_block(request)
        name = request.path_params["name"]
        rows = [
            s.catalog_json(self.node, index) for s in self._services(request, name, passing=False)
        ]
        return JSONResponse(rows, headers=_headers(index))

    async def health_service(self, request: Request) -> Response:
        index = await self._catalog_block(request)
        name = request.path_params["name"]
        passing = _flag(request, "passing")
        rows = [
            s.health_json(self.node, index) for s in self._services(request, name, passing=passing)
        ]
        return JSONResponse(rows, headers=_headers(index))

    # -- agent --------------------------------------------------------------------------

    async def agent_self(self, request: Request) -> Response:
        node = self.node
        body = {
            "Config": {
                "Datacenter": node.datacenter,
                "NodeName": node.name,
                "NodeID": node.id,
                "Server": True,
                "Revision": "socle",
                "Version": "1.17.0",
            },
            "Member": {"Name": node.name, "Addr": node.address, "Port": 8301, "Status": 1},
            "Meta": {"socle": "true"},
        }
        return JSONResponse(body, headers=_headers(self.registry.index))

    async def agent_services(self, request: Request) -> Response:
        index = self.registry.index
        out = {
            s.id: {**s.service_json(index), "Datacenter": self.node.datacenter}
            for s in consul_services(self.registry.instances())
        }
        return JSONResponse(out, headers=_headers(index))

    async def agent_register(self, request: Request) -> Response:
        raw = await _body(request, MAX_JSON_BODY)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise _Refused(400, "Request decode failed: the body is not valid JSON") from None
        service = parse_registration(body, default_address=self.node.address)
        await self.network.agent.register(service)
        return Response(b"", headers=_headers(self.registry.index))

    async def agent_deregister(self, request: Request) -> Response:
        await self.network.agent.deregister(request.path_params["id"])
        return Response(b"", headers=_headers(self.registry.index))

    async def status_leader(self, request: Request) -> Response:
        return JSONResponse(f"{self.node.address}:8300")

    # -- KV -----------------------------------------------------------------------------

    async def kv(self, request: Request) -> Response:
        key: str = request.path_params.get("key", "")
        if request.method == "GET":
            return await self._kv_get(request, key)
        if request.method == "PUT":
            cas = _int_param(request, "cas")
            flags = _int_param(request, "flags") or 0
            value = await _body(request, MAX_VALUE_BYTES)
            if _flag(request, "acquire") or _flag(request, "release"):
                raise _Refused(400, "Sessions (acquire/release) are not supported")
            done = await self.network.kv.put(key, value, flags=flags, cas=cas)
            return JSONResponse(done, headers=_headers(self.network.kv.index))
        if request.method == "DELETE":
            cas = _int_param(request, "cas")
            recurse = _flag(request, "recurse")
            if not key and not recurse:
                raise _Refused(400, "Missing key name")
            done = await self.network.kv.delete(key, recurse=recurse, cas=cas)
            return JSONResponse(done, headers=_headers(self.network.kv.index))
        raise _Refused(405, f"method {request.method} not allowed")

    async def _kv_read(
        self, key: str, recurse: bool, keys: bool, separator: str | None
    ) -> tuple[int, list[KVEntry] | list[str]]:
        kv = self.network.kv
        if keys:
            return kv.index, await kv.keys(key, separator)
        if recurse:
            return kv.index, await kv.entries(key)
        entry = await kv.get(key)
        if entry is None:
            return kv.index, []
        return entry.modify_index, [entry]

    async def _kv_get(self, request: Request, key: str) -> Response:
        recurse, keys = _flag(request, "recurse"), "keys" in request.query_params
        separator = request.query_params.get("separator") or None
        if not key and not recurse and not keys:
            raise _Refused(400, "Missing key name")
        wanted = _int_param(request, "index")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (_wait(request) if wanted is not None else 0.0)
        # The KV index is taken *before* each read: a write that lands while the read
        # awaits the store then wakes the wait at once (taken after, it would be a lost
        # wake-up: the query would sleep until the next write or the end of ``wait``).
        seen = self.network.kv.index
        index, found = await self._kv_read(key, recurse, keys, separator)
        while wanted is not None and index <= wanted:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self.network.kv.wait(seen, remaining)
            seen = self.network.kv.index
            index, found = await self._kv_read(key, recurse, keys, separator)
        headers = _headers(index)
        if not found:
            return Response(b"", status_code=404, headers=headers)
        if keys:
            return JSONResponse(found, headers=headers)
        entries = [e for e in found if isinstance(e, KVEntry)]
        if _flag(request, "raw") and not recurse:
            return Response(
                entries[0].value or b"", headers=headers, media_type="application/octet-stream"
            )
        return JSONResponse([e.to_consul() for e in entries], headers=headers)


def create_consul_app(network: NetworkService, tokens: TokenStore) -> Starlette:
    """The Consul-compatible ASGI app of one control plane."""
    api = ConsulApi(network, tokens)
    g = api.guarded
    routes = [
        Route("/v1/catalog/services", g(api.catalog_services), methods=["GET"]),
        Route("/v1/catalog/service/{name}", g(api.catalog_service), methods=["GET"]),
        Route("/v1/health/service/{name}", g(api.health_service), methods=["GET"]),
        Route("/v1/agent/self", g(api.agent_self), methods=["GET"]),
        Route("/v1/agent/services", g(api.agent_services), methods=["GET"]),
        Route("/v1/agent/service/register", g(api.agent_register), methods=["PUT"]),
        Route("/v1/agent/service/deregister/{id}", g(api.agent_deregister), methods=["PUT"]),
        Route("/v1/status/leader", g(api.status_leader), methods=["GET"]),
        Route("/v1/kv/", g(api.kv), methods=["GET", "PUT", "DELETE"]),
        Route("/v1/kv/{key:path}", g(api.kv), methods=["GET", "PUT", "DELETE"]),
    ]
    return Starlette(routes=routes)


__all__ = ["ConsulApi", "create_consul_app"]
