"""A control plane that stops cleanly ends its process at once (no interpreter teardown),
yet loses nothing on the way out: exit status 0 and its last log line written."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.socle_fixture import SocleServer
from tests.support.ports import free_port


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCLE_", "VAULT_"))}
    env.update(
        SOCLE_HOME=str(home),
        SOCLE_DNS_LISTEN="127.0.0.1:0",
        SOCLE_OTLP_BRIDGE_PORT="0",
        SOCLE_CONSUL_LISTEN="127.0.0.1:0",
        SOCLE_PROMETHEUS="off",
        SOCLE_ALERTMANAGER="off",
        SOCLE_INGRESS_HTTP=f"127.0.0.1:{free_port()}",
        SOCLE_INGRESS_HTTPS=f"127.0.0.1:{free_port()}",
    )
    return env


def test_a_clean_stop_exits_zero_with_its_last_log_line_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = SocleServer(home=home, env=_env(home))
    server.start()
    try:
        response = server.api("POST", "/api/v1/shutdown", json={"keep_apps": False})
        assert response.status_code == 200, response.text
        assert server.proc is not None
        assert server.proc.wait(60) == 0
        lines = server.log.read_text().splitlines()
        assert lines[-1].endswith("socle control plane stopped"), lines[-5:]
        assert not (home / "server.json").exists()  # the API's stop ran before the exit
    finally:
        server.cleanup()


def test_a_sigterm_stops_it_the_same_way(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = SocleServer(home=home, env=_env(home))
    server.start()
    try:
        assert server.proc is not None
        server.proc.terminate()
        assert server.proc.wait(60) == 0
        assert server.log.read_text().splitlines()[-1].endswith("socle control plane stopped")
    finally:
        server.cleanup()
