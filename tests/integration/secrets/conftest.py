"""A real secrets server for integration tests: uvicorn in a thread, SQLite under tmp_path.

Fixtures:

* ``vault_server``: initialised (5 shares, threshold 3) and unsealed, with the default
  registry; ``.client()`` is an hvac client logged in as root.
* ``sealed_vault_server``: a fresh, uninitialised (hence sealed) server for init/unseal.
* ``vault_server_factory``: ``make(registry=..., initialize=..., unseal=..., home=...)``
  for tests that need their own backends, or a second server on the same home (restart).

Each server listens on a socket bound to 127.0.0.1:0 by the fixture (no port race). The
server object also exposes the in-process :class:`SecretsCore` (``.core``) for tests that
must look behind the API (e.g. ``read_for_app``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from socle.secrets.core.standalone import StandaloneApp
from socle.secrets.registry import BackendRegistry, default_registry
from tests.integration.secrets.socle_vault_server import VaultServer, _ThreadedUvicorn

__all__ = ["VaultServer"]


@pytest.fixture
def vault_server_factory(tmp_path: Path) -> Iterator[Callable[..., VaultServer]]:
    servers: list[VaultServer] = []

    def make(
        *,
        registry: BackendRegistry | None = None,
        home: Path | None = None,
        initialize: bool = True,
        unseal: bool = True,
        shares: int = 5,
        threshold: int = 3,
        previous: VaultServer | None = None,
        **core_options: Any,
    ) -> VaultServer:
        """Start a server. ``previous`` reuses its home, registry and keys (a restart)."""
        if previous is not None:
            home, registry = previous.home, previous.registry
        home = home or tmp_path / f"home{len(servers)}"
        registry = registry if registry is not None else default_registry()
        # Audit devices may write only in allowed folders: these tests use their tmp_path.
        core_options.setdefault("audit_dirs", [tmp_path])
        app = StandaloneApp(home, registry, **core_options)
        runner = _ThreadedUvicorn(app)
        runner.start()
        server = VaultServer(home, registry, app, runner)
        servers.append(server)
        if previous is not None:
            server.root_token, server.unseal_keys = previous.root_token, previous.unseal_keys
        elif initialize:
            server.initialize(shares, threshold)
        if unseal and server.unseal_keys:
            server.unseal()
        return server

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def vault_server(vault_server_factory: Callable[..., VaultServer]) -> VaultServer:
    return vault_server_factory()


@pytest.fixture
def sealed_vault_server(vault_server_factory: Callable[..., VaultServer]) -> VaultServer:
    return vault_server_factory(initialize=False)
