"""Auto-scaling with a real Prometheus: an app under load scales out to its max, then back in
once the load is gone and the scale-in window has passed; each decision is recorded."""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.socle_fixture import SocleServer, observed_env, running_server, wait_for, write_repo

pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus")

LOADED_APP = textwrap.dedent(
    """
    import os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    until = float(os.environ["LOAD_UNTIL"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            load = 25 if time.time() < until else 0  # the queue this instance sees
            body = f"demo_queue_depth {load}\\n".encode() if self.path == "/metrics" else b"ok"
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
        def log_message(self, *args):
            pass

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


@pytest.fixture
def observed(tmp_path: Path, socle_env: dict[str, str]) -> Iterator[SocleServer]:
    env = observed_env(socle_env, alertmanager=False, SOCLE_AUTOSCALE_SECONDS="1")
    with running_server(tmp_path / "home", env) as srv:
        yield srv


def _ready(server: SocleServer) -> int:
    return sum(1 for i in server.app("web")["instances"] if i["ready"])


@pytest.mark.timeout(400)
def test_an_app_under_load_scales_out_and_back_in(observed: SocleServer, tmp_path: Path) -> None:
    server = observed
    spec: dict[str, Any] = {
        "run": {"command": ["python3", "loaded.py"], "workdir": "web"},
        "env": {"LOAD_UNTIL": str(time.time() + 40)},
        "metrics": {"port": "http"},
        "autoscale": {
            "min": 1,
            "max": 3,
            "target": {"query": 'max(demo_queue_depth{app="web"})', "value": 10},
            "stabilization": {"up": "0s", "down": "5s"},
        },
    }
    repo = write_repo(tmp_path / "repo", {"web": spec})
    (repo / "web" / "loaded.py").write_text(LOADED_APP)
    server.cli("apply", str(repo), "--yes")

    wait_for(lambda: _ready(server) == 3, 120, "three instances under load (25 / 10 per instance)")
    assert server.app("web")["desired"] == 3
    wait_for(
        lambda: _ready(server) == 1 and len(server.app("web")["instances"]) == 1,
        150,
        "back to one instance once the load is gone",
    )

    def decisions() -> list[dict[str, Any]]:
        data = json.loads(server.cli("alerts", "--json").stdout)
        return [r for r in data["remediations"] if r["rule"] == "autoscale/web"]

    made = decisions()
    assert made[0]["action"] == "scale" and made[0]["message"].startswith("1 -> 3 instances")
    assert made[-1]["message"].startswith("3 -> 1 instances")
    assert all(r["result"] == "done" for r in made)
    # The manifest is not rewritten: no new revision for scaling.
    assert [r["number"] for r in json.loads(server.cli("history", "--json").stdout)] == [1]
