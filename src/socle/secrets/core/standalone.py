"""The secrets core on its own: one SQLite store under a home directory, served at ``/v1``.

Socle's server mounts :attr:`SecretsCore.asgi` inside its own app; this module exists for
the integration tests (a real uvicorn in a thread) and for measuring the core alone::

    python -m socle.secrets.core.standalone --home /tmp/vault --listen 127.0.0.1:8200
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from socle.secrets.core import SecretsCore
from socle.secrets.core.http import Receive, Scope, Send
from socle.secrets.registry import BackendRegistry, default_registry
from socle.state.sqlite import SqliteStore


class StandaloneApp:
    """An ASGI app that owns its store: opened at lifespan startup, closed at shutdown."""

    def __init__(
        self,
        home: Path,
        registry: BackendRegistry | None = None,
        *,
        dev: bool = False,
        **core_options: Any,
    ) -> None:
        self.home = home
        self.registry = registry if registry is not None else default_registry()
        self.dev = dev
        self.core_options = core_options
        self.core: SecretsCore | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop serving the app, for tests that call the core from another thread."""
        self._store: SqliteStore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if self.core is None:
                raise RuntimeError("the secrets core is not started")
            await self.core.asgi(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.loop = asyncio.get_running_loop()
                    self.home.mkdir(parents=True, exist_ok=True)
                    self._store = await SqliteStore.open(self.home / "state.db")
                    self.core = SecretsCore(
                        self._store, self.home, self.registry, dev=self.dev, **self.core_options
                    )
                    await self.core.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.core is not None:
                    await self.core.stop()
                if self._store is not None:
                    await self._store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _load_registry(spec: str) -> BackendRegistry:
    module, _, name = spec.partition(":")
    factory: Callable[[], BackendRegistry] = getattr(importlib.import_module(module), name)
    return factory()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1:8200")
    parser.add_argument("--dev", action="store_true")
    parser.add_argument("--registry", help="module:function returning a BackendRegistry")
    parser.add_argument("--http", default="h11", choices=["h11", "httptools"])
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    registry = _load_registry(args.registry) if args.registry else None
    logging.basicConfig(level=logging.WARNING)
    app = StandaloneApp(args.home, registry, dev=args.dev)
    # h11: uvicorn's faster httptools parser (llhttp) rejects the LIST method Vault clients use.
    uvicorn.run(
        app, host=host, port=int(port), log_level="warning", access_log=False, http=args.http
    )


if __name__ == "__main__":
    main()
