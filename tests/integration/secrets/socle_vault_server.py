"""The secrets test server behind the ``vault_server`` fixtures (see conftest.py).

Kept out of conftest.py so the type can be imported from a plain module; conftest.py
re-exports it (``from tests.integration.secrets.conftest import VaultServer`` works too).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hvac
import uvicorn

from socle.secrets.core import SecretsCore
from socle.secrets.core.standalone import StandaloneApp
from socle.secrets.registry import BackendRegistry

T = TypeVar("T")


class _ThreadedUvicorn:
    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        # h11, not httptools: llhttp rejects the LIST method that hvac and the Vault CLI send.
        config = uvicorn.Config(
            app, lifespan="on", log_level="warning", access_log=False, http="h11"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the secrets test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@dataclass
class VaultServer:
    home: Path
    registry: BackendRegistry
    app: StandaloneApp
    runner: _ThreadedUvicorn
    root_token: str = ""
    unseal_keys: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.runner.port}"

    @property
    def core(self) -> SecretsCore:
        assert self.app.core is not None
        return self.app.core

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's event loop (where the core lives) and wait."""
        assert self.app.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.app.loop).result(timeout=30)

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client; root by default, ``token=""`` for an anonymous one."""
        return hvac.Client(
            url=self.url, token=self.root_token if token is None else token, timeout=10
        )

    def initialize(self, shares: int = 5, threshold: int = 3) -> dict[str, Any]:
        result: dict[str, Any] = self.client("").sys.initialize(shares, threshold)
        self.root_token = result["root_token"]
        self.unseal_keys = list(result["keys"])
        return result

    def unseal(self) -> None:
        client = self.client("")
        status = client.sys.submit_unseal_keys(self.unseal_keys)
        assert status is not None and not status["sealed"], status

    def stop(self) -> None:
        self.runner.stop()
