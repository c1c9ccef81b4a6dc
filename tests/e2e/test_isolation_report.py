"""`socle status` tells the truth about isolation: what it reports per mechanism (network
namespace, uid, seccomp, cgroups) is checked against what an app sees from the inside
(its network namespace, uid, seccomp mode) and the host's cgroup hierarchies, with per-
instance network namespaces on (the default as root) and off."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.socle_fixture import SocleServer, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

REPORTER = textwrap.dedent(
    """
    import json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    status = {}
    for line in open("/proc/self/status").read().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    seen = {"netns": os.readlink("/proc/self/ns/net"), "uid": os.getuid(),
            "seccomp": status.get("Seccomp"), "no_new_privs": status.get("NoNewPrivs")}
    print("REPORT " + json.dumps(seen), flush=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "2")
            self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *args):
            pass

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


def inside(server: SocleServer, tmp_path: Path) -> dict[str, Any]:
    """Apply the reporting app; what it saw from inside its sandbox."""
    repo = tmp_path / "repo"
    (repo / "reporter").mkdir(parents=True)
    (repo / "reporter" / "app.py").write_text(REPORTER)
    app = {
        "apiVersion": "socle/v1",
        "kind": "App",
        "metadata": {"name": "reporter"},
        "spec": {
            "run": {"command": [sys.executable, "app.py"], "workdir": "reporter"},
            "ports": [{"name": "http"}],
            "health": {"http": {"path": "/", "port": "http"}, "interval": "1s"},
            "stopGrace": "2s",
        },
    }
    (repo / "app.yaml").write_text(yaml.safe_dump(app, sort_keys=False))
    server.cli("apply", str(repo), "--yes", timeout=180)

    def found() -> dict[str, Any] | None:
        for line in server.cli("logs", "reporter").stdout.splitlines():
            if "REPORT " in line:
                return dict(json.loads(line.split("REPORT ", 1)[1]))
        return None

    seen: dict[str, Any] = wait_for(found, 60, "the app's report")
    return seen


def check_common(isolation: dict[str, Any], seen: dict[str, Any]) -> None:
    features, protections = isolation["features"], isolation["protections"]
    assert set(features) == {"network", "namespaces", "cgroups", "user", "seccomp", "landlock"}
    # seccomp: 2 is "filter mode" in /proc/PID/status.
    assert (seen["seccomp"] == "2") == protections["syscall_filter"]
    assert (features["seccomp"] != "none") == protections["syscall_filter"]
    assert (seen["uid"] != 0) == protections["non_root"]
    if protections["non_root"]:
        assert "uid per app" in features["user"]
    assert (seen["no_new_privs"] == "1") == protections["no_new_privileges"]
    memory = Path("/sys/fs/cgroup/memory/cgroup.procs").exists()
    assert ("memory" in features["cgroups"]) == (memory and protections["resource_limits"])
    assert features["landlock"].startswith("not used")  # honest: Socle does not use it
    assert not protections["minimal_ports"]


def test_own_network_namespace_is_reported(server: SocleServer, tmp_path: Path) -> None:
    seen = inside(server, tmp_path)
    status = json.loads(server.cli("status", "--json").stdout)
    isolation = status["isolation"]
    assert seen["netns"] != os.readlink("/proc/self/ns/net")  # really its own
    assert isolation["protections"]["network_namespace"] is True
    assert isolation["features"]["network"].startswith("own network namespace")
    assert "netns" in isolation["detail"]
    assert "share the host network" not in (isolation["warning"] or "")
    assert "own network namespace" in (isolation["warning"] or "")  # ports: said precisely
    check_common(isolation, seen)
    text = server.cli("status").stdout
    assert "network: own network namespace per instance" in text
    assert "✓ network_namespace" in text


@pytest.fixture
def shared_server(tmp_path: Path, socle_env: dict[str, str]) -> Any:
    srv = SocleServer(home=tmp_path / "home", env=dict(socle_env, SOCLE_NETWORK_ISOLATION="0"))
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def test_shared_network_is_reported(shared_server: SocleServer, tmp_path: Path) -> None:
    seen = inside(shared_server, tmp_path)
    isolation = json.loads(shared_server.cli("status", "--json").stdout)["isolation"]
    assert seen["netns"] == os.readlink("/proc/self/ns/net")  # really the host's
    assert isolation["protections"]["network_namespace"] is False
    assert isolation["features"]["network"].startswith("shared with the host")
    assert "apps share the host network" in isolation["warning"]
    check_common(isolation, seen)
    assert "✗ network_namespace" in shared_server.cli("status").stdout
