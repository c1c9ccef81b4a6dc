from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.socle_fixture import SocleServer, running_server
from tests.support.ports import free_port


@pytest.fixture
def socle_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCLE_", "VAULT_"))}
    env["SOCLE_HOME"] = str(tmp_path / "home")
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


@pytest.fixture
def server(tmp_path: Path, socle_env: dict[str, str]) -> Iterator[SocleServer]:
    with running_server(tmp_path / "home", socle_env) as srv:
        yield srv


@pytest.fixture
def dev_server(tmp_path: Path, socle_env: dict[str, str]) -> Iterator[SocleServer]:
    """A control plane in development mode: secrets initialised and auto-unsealed."""
    env = dict(socle_env, SOCLE_SECRET_CHECK_SECONDS="0.5")
    with running_server(tmp_path / "home", env, args=("--dev",)) as srv:
        yield srv
