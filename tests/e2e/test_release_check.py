"""Early detection with a real Prometheus: a new release whose error ratio departs from the
previous release's is rolled back by itself (no fixed threshold, no alert to write)."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.socle_fixture import (
    SocleServer,
    get_json,
    instance_url,
    observed_env,
    prometheus_query,
    running_server,
    wait_for,
    write_repo,
)

pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="needs Debian's prometheus")

TRAFFIC_APP = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    failing = float(os.environ.get("FAILING", "0"))
    counts = {"200": 0, "500": 0}
    def traffic():  # 20 requests a second, `failing` of them answered 500
        while True:
            bad = round(2 * failing)
            counts["500"] += bad; counts["200"] += 2 - bad
            time.sleep(0.1)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                body = "".join(f'shop_requests_total{{code="{c}"}} {n}\\n'
                               for c, n in counts.items()).encode()
            else:
                body = json.dumps({"version": os.environ["VERSION"]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
        def log_message(self, *args):
            pass

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=traffic, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


@pytest.fixture
def observed(tmp_path: Path, socle_env: dict[str, str]) -> Iterator[SocleServer]:
    env = observed_env(socle_env, alertmanager=False, SOCLE_RELEASE_CHECK_SECONDS="1")
    with running_server(tmp_path / "home", env) as srv:
        yield srv


def _repo(root: Path, version: str, failing: str) -> Path:
    spec: dict[str, Any] = {
        "run": {"command": ["python3", "shop.py"], "workdir": "web"},
        "env": {"VERSION": version, "FAILING": failing},
        "metrics": {
            "port": "http",
            "releaseCheck": {
                "total": "shop_requests_total",
                "errors": 'shop_requests_total{code="500"}',
                "factor": 2,
                "minRatio": 0.1,
                "window": "20s",
            },
        },
    }
    write_repo(root, {"shop": spec})
    (root / "web" / "shop.py").write_text(TRAFFIC_APP)
    return root


@pytest.mark.timeout(400)
def test_a_bad_release_is_rolled_back(observed: SocleServer, tmp_path: Path) -> None:
    server = observed
    repo = tmp_path / "repo"
    server.cli("apply", str(_repo(repo, "1", "0")), "--yes")

    def scraped() -> bool:
        return bool(prometheus_query(server, 'shop_requests_total{app="shop"}'))

    wait_for(scraped, 90, "the first release's counters in Prometheus")
    # A good second release is left alone: same error ratio as the first.
    server.cli("apply", str(_repo(repo, "2", "0")), "--yes")
    # It runs long enough to have a rate of its own (two scrapes) before the next release
    # replaces it: the check compares the new release with what ran just before it. (A
    # release replaced before it was ever scraped twice leaves nothing to compare with.)
    second = next(i["id"] for i in server.app("shop")["instances"] if i["ordinal"] == 0)

    def second_rated() -> bool:
        return bool(
            prometheus_query(server, f'rate(shop_requests_total{{instance="{second}"}}[20s])')
        )

    wait_for(second_rated, 90, "a rate of the second release's counters in Prometheus")
    # The third release fails half of its requests.
    server.cli("apply", str(_repo(repo, "3", "0.5")), "--yes")

    def rolled_back() -> list[dict[str, Any]]:
        data = json.loads(server.cli("alerts", "--json").stdout)
        return [r for r in data["remediations"] if r["rule"] == "release-check/shop"]

    (done,) = wait_for(rolled_back, 120, "the release check to roll release 3 back")
    assert done["action"] == "rollback" and done["result"] == "done"
    assert "back to its state in revision 2" in done["message"]
    wait_for(lambda: get_json(instance_url(server.app("shop")))["version"] == "2", 90, "release 2")
    history = json.loads(server.cli("history", "--json").stdout)
    newest = max(history, key=lambda r: r["number"])
    assert newest["who"] == "socle (alert release-check/shop)" and newest["rollback_of"] == 2
