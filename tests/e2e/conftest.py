"""Fixtures of the e2e tests: a real control plane per test (``server``, ``dev_server``).

A control plane takes seconds of CPU to start (imports, mostly), while a test keeps about one
of the two cores busy. So the server the NEXT test needs starts in the background while the
current test runs (:class:`_Ahead`): every test still gets a fresh control plane with its
own home that nothing else touched, and the suite no longer waits for most starts. The
server started ahead lives under its own temporary folder (``server.home``), not under the
test's ``tmp_path``; a test that builds its own server uses ``socle_env`` as before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.socle_fixture import SocleServer, free_port

SERVER_FIXTURES = {"server": False, "dev_server": True}
"""Fixture name -> whether it is a development-mode server."""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCLE_", "VAULT_"))}
    env["SOCLE_HOME"] = str(home)
    # The Consul-compatible listener and the DNS server default to fixed ports (8500, 8600):
    # tests running side by side each take free ones.
    env["SOCLE_CONSUL_LISTEN"] = "127.0.0.1:0"
    env["SOCLE_DNS_LISTEN"] = "127.0.0.1:0"
    env["SOCLE_OTLP_BRIDGE_PORT"] = "0"
    # Every control plane would start its own Prometheus and Alertmanager: on two shared
    # cores, only the tests of observe (tests/e2e/test_observe.py) turn them on.
    env["SOCLE_PROMETHEUS"] = "off"
    env["SOCLE_ALERTMANAGER"] = "off"
    env["SOCLE_INGRESS_HTTP"] = f"127.0.0.1:{free_port()}"
    env["SOCLE_INGRESS_HTTPS"] = f"127.0.0.1:{free_port()}"
    return env


def _make_server(root: Path, *, dev: bool) -> SocleServer:
    home = root / "home"
    if dev:
        # Development mode: secrets initialised and auto-unsealed.
        env = dict(_env(home), SOCLE_SECRET_CHECK_SECONDS="0.5")
        return SocleServer(home=home, env=env, args=("--dev",))
    return SocleServer(home=home, env=_env(home))


@pytest.fixture
def socle_env(tmp_path: Path) -> dict[str, str]:
    return _env(tmp_path / "home")


@dataclass
class _Started:
    """A server being started in a background thread, and how that went."""

    server: SocleServer
    dev: bool
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self.server.start()
        except BaseException as exc:  # reported when the server is taken
            self.error = exc
        finally:
            self.done.set()


class _Ahead:
    """Starts the next test's server while the current test runs (one at most: two cores)."""

    def __init__(self, make_root: Callable[[], Path]) -> None:
        self._make_root = make_root
        self._ahead: _Started | None = None

    def _discard(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.done.wait()
            ahead.server.cleanup()

    def take(self, *, dev: bool, next_dev: bool | None) -> SocleServer:
        """A started server of the kind asked for; ``next_dev``: the kind the next test that
        needs one wants (None: no later test does)."""
        ahead, self._ahead = self._ahead, None
        server = None
        if ahead is not None:
            ahead.done.wait()
            if ahead.dev == dev and ahead.error is None:
                server = ahead.server
            else:
                # Another kind (tests deselected or reordered), or it failed to start while
                # the machine was busy with the previous test: start one the ordinary way
                # below, which reports its own failure.
                ahead.server.cleanup()
        if server is None:
            server = _make_server(self._make_root(), dev=dev)
            try:
                server.start()
            except BaseException:
                server.cleanup()
                raise
        if next_dev is not None:
            started = self._ahead = _Started(
                _make_server(self._make_root(), dev=next_dev), next_dev
            )
            threading.Thread(target=started.run, name="server-ahead", daemon=True).start()
        return server

    def close(self) -> None:
        self._discard()


@pytest.fixture(scope="session")
def _servers_ahead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Ahead]:
    ahead = _Ahead(lambda: tmp_path_factory.mktemp("server"))
    try:
        yield ahead
    finally:
        ahead.close()


def _next_kind(request: pytest.FixtureRequest) -> bool | None:
    """Whether the next test (in run order) that uses ``server`` or ``dev_server`` wants a
    development-mode one; None when no later test uses either."""
    items = request.session.items
    try:
        index = items.index(request.node)
    except ValueError:
        return None
    for item in items[index + 1 :]:
        for name in getattr(item, "fixturenames", ()):
            if name in SERVER_FIXTURES:
                return SERVER_FIXTURES[name]
    return None


def _server(request: pytest.FixtureRequest, ahead: _Ahead, *, dev: bool) -> Iterator[SocleServer]:
    srv = ahead.take(dev=dev, next_dev=_next_kind(request))
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture
def server(request: pytest.FixtureRequest, _servers_ahead: _Ahead) -> Iterator[SocleServer]:
    """A fresh control plane (its home: ``server.home``)."""
    yield from _server(request, _servers_ahead, dev=False)


@pytest.fixture
def dev_server(request: pytest.FixtureRequest, _servers_ahead: _Ahead) -> Iterator[SocleServer]:
    """A control plane in development mode: secrets initialised and auto-unsealed."""
    yield from _server(request, _servers_ahead, dev=True)
