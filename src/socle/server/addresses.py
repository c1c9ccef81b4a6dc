"""The address space of the control plane, decided in one place (see docs/architecture.md,
"Addresses").

- The platform API under ``/api/v1`` (plus the unauthenticated ``/healthz``) and the
  Vault-compatible secrets API under ``/v1``, both on the main listener (``listen``,
  default ``127.0.0.1:7780``). :func:`main_listener` is the one place that splits them.
- The Consul-compatible reads (``/v1/catalog``, ``/v1/health``, ``/v1/agent``, ``/v1/kv``)
  on their own listener (``consul_listen``, default ``127.0.0.1:8500``), so that both APIs
  keep their public paths; not served yet.
- DNS on ``dns_listen`` (default ``127.0.0.1:8600``); not served yet.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

PLATFORM_PREFIX = "/api/v1"
"""Socle's own API."""

VAULT_PREFIX = "/v1"
"""The Vault-compatible secrets API on the main listener (Vault clients expect it here)."""

OTLP_TRACES = "/v1/traces"
"""The OTLP/HTTP trace receiver: OTLP's fixed path, carved out of the Vault prefix (a
secrets engine cannot be mounted at ``traces/``)."""


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def main_listener(platform: ASGIApp, vault: ASGIApp) -> ASGIApp:
    """One ASGI app for the main listener: ``/v1`` to the Vault API, the rest to ``platform``.

    Only HTTP requests under exactly ``/v1`` or ``/v1/...`` go to the Vault API (``/v10``
    does not), but for the OTLP receiver (:data:`OTLP_TRACES`); lifespan and everything
    else go to the platform app.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and _under(path, VAULT_PREFIX) and not _under(path, OTLP_TRACES):
            await vault(scope, receive, send)
        else:
            await platform(scope, receive, send)

    return app


__all__ = ["OTLP_TRACES", "PLATFORM_PREFIX", "VAULT_PREFIX", "main_listener"]
