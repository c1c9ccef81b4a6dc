"""Observe like a user: a real Prometheus and Alertmanager started by Socle itself.

- Socle's own metrics and an opted-in app's metrics are scraped (``socle metrics query``),
  and a team's own Prometheus federates them through the API with a Socle token;
- a leaking app fires its memory AlertRule; while a silence matches, the alert is
  suppressed and nothing is restarted; once the silence is expired, Alertmanager calls
  Socle back and the rule's ``restart`` action runs (recorded, then rate-limited);
- Alertmanager's API wants a password; an alert forged through it restarts nothing;
- an AlertRule on the log store (``logQuery``) fires from an app's error lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.socle_fixture import (
    SocleServer,
    observed_env,
    running_server,
    wait_for,
    write_repo,
)
from tests.e2e.socle_fixture import prometheus_query as query
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
    reason="needs Debian's prometheus and prometheus-alertmanager",
)

METRICS_APP = textwrap.dedent(
    """
    import os, signal, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = 0

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            global hits
            hits += 1
            if self.path == "/custom-metrics":
                body = ("# TYPE demo_hits_total counter\\n"
                        f"demo_hits_total {hits}\\n").encode()
            else:
                body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)

LEAKY_APP = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "2")
            self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *args):
            pass

    hoard = []
    def leak():
        while len(hoard) < 30:  # 30 x 5 MB, then it holds
            hoard.append(bytearray(os.urandom(1)) * (5 * 1024 * 1024))
            time.sleep(0.1)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=leak, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


@pytest.fixture
def observed(tmp_path: Path, socle_env: dict[str, str]) -> Iterator[SocleServer]:
    with running_server(tmp_path / "home", observed_env(socle_env)) as srv:
        yield srv


def add_app(repo: Path, name: str, source: str, spec: dict[str, Any]) -> None:
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(source)
    doc = {
        "apiVersion": "socle/v1",
        "kind": "App",
        "metadata": {"name": name},
        "spec": {
            "run": {"command": [sys.executable, "app.py"], "workdir": name},
            "ports": [{"name": "http"}],
            "health": {"http": {"path": "/", "port": "http"}, "interval": "1s"},
            "stopGrace": "2s",
            **spec,
        },
    }
    (repo / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def test_socle_and_app_metrics_are_scraped(observed: SocleServer, tmp_path: Path) -> None:
    server = observed
    # /metrics needs a token like the rest of the API.
    assert server.api("GET", "/metrics", token="").status_code == 401
    page = server.api("GET", "/metrics")
    assert page.status_code == 200 and "socle_build_info" in page.text

    repo = write_repo(tmp_path / "repo", {})
    add_app(repo, "demo", METRICS_APP, {"metrics": {"port": "http", "path": "/custom-metrics"}})
    server.cli("apply", str(repo), "--yes")

    targets = server.api("GET", "/api/v1/metrics/targets", params={"job": "apps"}).json()
    assert [t["labels"]["app"] for t in targets] == ["demo"]
    assert targets[0]["labels"]["__metrics_path__"] == "/custom-metrics"

    # Socle itself, its API latency by route template, an apply, and the app's own series.
    wait_for(lambda: query(server, 'up{job="socle"} == 1'), 60, "Prometheus to scrape Socle")
    wait_for(lambda: query(server, 'socle_applies_total{status="succeeded"} >= 1'), 60, "applies")
    routes = query(server, "socle_api_request_duration_seconds_count")
    assert any(r["metric"]["route"] == "/api/v1/apply" for r in routes), routes
    demo = wait_for(lambda: query(server, 'demo_hits_total{app="demo"}'), 60, "app metrics")
    labels = demo[0]["metric"]
    assert labels["env"] == "default" and labels["instance"].startswith("demo")
    assert labels["release"]

    # The per-instance exporter, without any change to the app.
    memory = wait_for(
        lambda: query(server, 'socle_instance_memory_bytes{app="demo"} > 0'), 60, "memory"
    )
    assert float(memory[0]["value"][1]) > 1_000_000
    assert wait_for(lambda: query(server, 'socle_instance_open_fds{app="demo"} > 0'), 30)
    assert wait_for(lambda: query(server, 'socle_instance_cpu_seconds_total{app="demo"}'), 30)
    ranged = json.loads(server.cli("metrics", "query", "up", "--range", "5m", "--json").stdout)
    assert ranged["resultType"] == "matrix"
    table = server.cli("metrics", "query", 'up{job="socle"}').stdout
    assert "socle" in table

    plane = json.loads(server.cli("status", "--json").stdout)["control_plane"]["observe"]
    assert plane["prometheus"]["pid"] and plane["alertmanager"]["pid"]
    assert "observe: Prometheus pid" in server.cli("status").stdout

    bad = server.cli("metrics", "query", "sum(", check=False)
    assert bad.returncode != 0 and "refused the query" in bad.stderr
    bad_step = server.cli("metrics", "query", "up", "--range", "1h", "--step", "x", check=False)
    assert bad_step.returncode != 0 and "--step" in bad_step.stderr

    federation_by_a_teams_prometheus(server, tmp_path / "team")


def federation_by_a_teams_prometheus(server: SocleServer, folder: Path) -> None:
    """A team's own, real Prometheus federates Socle's series through the API, with a named
    Socle token and the scrape config docs/metrics.md gives (promtool checks it too)."""
    token = json.loads(server.cli("token", "create", "team-prom", "--json").stdout)["token"]
    assert server.api("GET", "/api/v1/metrics/federate", token=token).status_code == 400
    assert (
        server.api(
            "GET", "/api/v1/metrics/federate", params={"match[]": "up"}, token=""
        ).status_code
        == 401
    )
    folder.mkdir()
    (folder / "socle.token").write_text(token)
    (folder / "socle.token").chmod(0o600)
    target = server.url.removeprefix("http://")
    (folder / "prometheus.yml").write_text(
        textwrap.dedent(
            f"""
            scrape_configs:
              - job_name: socle-federate
                honor_labels: true
                metrics_path: /api/v1/metrics/federate
                params:
                  'match[]': ['{{job=~"socle|socle-instances|apps"}}']
                authorization: {{credentials_file: {folder / "socle.token"}}}
                scrape_interval: 1s
                static_configs: [{{targets: ['{target}']}}]
            """
        )
    )
    prometheus = shutil.which("prometheus") or "prometheus"
    promtool = str(Path(prometheus).with_name("promtool"))
    subprocess.run([promtool, "check", "config", str(folder / "prometheus.yml")], check=True)
    port = free_port()
    team = subprocess.Popen(
        [
            prometheus,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def federated() -> list[dict[str, Any]]:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": 'demo_hits_total{app="demo"}'},
                    timeout=5,
                ).json()
            except httpx.HTTPError:
                return []
            result: list[dict[str, Any]] = answer["data"]["result"]
            return result

        series = wait_for(federated, 90, "the team's Prometheus to federate the app's series")
        # honor_labels: the series keep Socle's labels, not the federation job's.
        assert series[0]["metric"]["job"] == "apps"
        assert series[0]["metric"]["instance"].startswith("demo")
    finally:
        team.terminate()
        team.wait(30)


def test_leaking_app_alert_silence_then_restart(observed: SocleServer, tmp_path: Path) -> None:
    server = observed
    repo = write_repo(tmp_path / "repo", {})
    add_app(repo, "leaky", LEAKY_APP, {})
    rule = {
        "apiVersion": "socle/v1",
        "kind": "AlertRule",
        "metadata": {"name": "leaky-memory"},
        "spec": {
            "expr": 'socle_instance_memory_bytes{app="leaky"} > 100e6',
            "for": "1s",
            "severity": "critical",
            "annotations": {"summary": "leaky uses more than 100 MB"},
            "actions": ["restart"],
        },
    }
    (repo / "rules.yaml").write_text(yaml.safe_dump(rule, sort_keys=False))

    # A bad expression is refused at plan time, with the file and field.
    bad = dict(rule, metadata={"name": "broken"}, spec=dict(rule["spec"], expr="sum(("))
    (repo / "broken.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    refused = server.cli("plan", str(repo), check=False)
    assert refused.returncode == 1
    assert "broken.yaml" in refused.stderr and "spec.expr" in refused.stderr
    (repo / "broken.yaml").unlink()

    # Silence the rule first: the alert fires in Prometheus but Alertmanager holds it.
    added = json.loads(
        server.cli(
            "silence",
            "add",
            "alertname=leaky-memory",
            "--duration",
            "1h",
            "--comment",
            "test",
            "--json",
        ).stdout
    )
    silences = json.loads(server.cli("silence", "list", "--json").stdout)
    assert [s["id"] for s in silences] == [added["id"]]

    server.cli("apply", str(repo), "--yes")

    def suppressed() -> bool:
        alerts = json.loads(server.cli("alerts", "--json").stdout)["alerts"]
        return any(
            a["labels"]["alertname"] == "leaky-memory"
            and a["status"]["state"] == "suppressed"
            and a["status"]["silencedBy"] == [added["id"]]
            for a in alerts
        )

    wait_for(suppressed, 90, "the memory alert to fire, suppressed by the silence")
    time.sleep(5)  # longer than Alertmanager's group_wait: a leak through would act now
    held = json.loads(server.cli("alerts", "--json").stdout)
    assert held["remediations"] == []
    assert server.app("leaky")["instances"][0]["restarts"] == 0

    server.cli("silence", "expire", added["id"])
    again = server.cli("silence", "expire", added["id"]).stdout
    assert "had already expired" in again
    unknown = server.cli("silence", "expire", "00000000-0000-0000-0000-000000000000", check=False)
    assert unknown.returncode != 0 and "no silence" in unknown.stderr
    assert "socle silence list --all" in unknown.stderr
    fired_at = time.monotonic()

    def restarted() -> list[dict[str, Any]]:
        data = json.loads(server.cli("alerts", "--json").stdout)
        return [r for r in data["remediations"] if r["result"] == "done"]

    done = wait_for(restarted, 90, "the restart remediation")
    assert done[0]["rule"] == "leaky-memory" and done[0]["action"] == "restart"
    assert done[0]["app"] == "leaky"
    wait_for(lambda: server.app("leaky")["instances"][0]["restarts"] >= 1, 30, "restart")
    print(f"silence expired -> restart requested in {time.monotonic() - fired_at:.1f}s")

    # Alertmanager notifies again while the alert keeps firing (a leak that comes back):
    # the same rule does not restart the same instance again so soon (rate limit). The
    # webhook is called here like Alertmanager does, with its JSON shape.
    labels = {
        "alertname": "leaky-memory",
        "socle_rule": "leaky-memory",
        "severity": "critical",
        "app": "leaky",
        "env": "default",
        "instance": done[0]["instance"],
    }
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "socle",
        "groupLabels": {"alertname": "leaky-memory"},
        "alerts": [{"status": "firing", "labels": labels, "annotations": {}}],
    }
    assert server.api("POST", "/api/v1/alerts/webhook", token="", json=payload).status_code == 401
    again = server.api("POST", "/api/v1/alerts/webhook", json=payload).json()
    assert [r["result"] for r in again["remediations"]] == ["rate-limited"]
    assert server.app("leaky")["instances"][0]["restarts"] == 1
    table = server.cli("alerts").stdout
    assert "leaky-memory" in table and "rate-limited" in table
    metrics = server.api("GET", "/metrics").text
    assert 'socle_remediations_total{action="restart",result="done"} 1.0' in metrics


def test_an_alert_forged_through_alertmanagers_open_api_restarts_nothing(
    observed: SocleServer, tmp_path: Path
) -> None:
    """Every app sandbox shares the host's loopback: Alertmanager's API wants its password,
    and even an alert posted with it (leaked) reaches Socle's webhook with Alertmanager's own
    token but is not acted on: Socle acts only on what Prometheus itself has firing."""
    server = observed
    repo = write_repo(tmp_path / "repo", {})
    add_app(repo, "victim", METRICS_APP, {})
    rule = {
        "apiVersion": "socle/v1",
        "kind": "AlertRule",
        "metadata": {"name": "never"},
        "spec": {
            "expr": 'socle_instance_memory_bytes{app="victim"} > 1e15',
            "severity": "critical",
            "actions": ["restart"],
        },
    }
    (repo / "rules.yaml").write_text(yaml.safe_dump(rule, sort_keys=False))
    server.cli("apply", str(repo), "--yes")
    instance = server.app("victim")["instances"][0]["id"]
    observe = server.api("GET", "/api/v1/status").json()["control_plane"]["observe"]
    alertmanager = observe["alertmanager"]["url"]
    forged = [
        {
            "labels": {
                "alertname": "never",
                "socle_rule": "never",
                "severity": "critical",
                "app": "victim",
                "instance": instance,
            },
            "annotations": {"summary": "forged"},
        }
    ]
    anonymous = httpx.post(f"{alertmanager}/api/v2/alerts", json=forged, timeout=10)
    assert anonymous.status_code == 401
    silence = {"matchers": [], "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z"}
    assert httpx.post(f"{alertmanager}/api/v2/silences", json=silence).status_code == 401
    leaked = (server.home / "observe" / "alertmanager" / "web.password").read_text()
    posted = httpx.post(
        f"{alertmanager}/api/v2/alerts", json=forged, timeout=10, auth=("socle", leaked)
    )
    assert posted.status_code == 200

    def decided() -> list[dict[str, Any]]:
        data = json.loads(server.cli("alerts", "--json").stdout)
        return [r for r in data["remediations"] if r["rule"] == "never"]

    records = wait_for(decided, 90, "Alertmanager to relay the forged alert to Socle")
    assert [(r["instance"], r["result"]) for r in records] == [(instance, "unconfirmed")]
    assert server.app("victim")["instances"][0]["restarts"] == 0


ERRORS_APP = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    counts = {"200": 0, "500": 0}
    def serve_traffic():  # half of the requests fail
        while True:
            counts["200"] += 5; counts["500"] += 5
            time.sleep(0.1)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"ok"
            if self.path == "/metrics":
                body = "".join(f'demo_requests_total{{code="{c}"}} {n}\\n'
                               for c, n in counts.items()).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
        def log_message(self, *args):
            pass

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=serve_traffic, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


def test_slo_burn_alert_fires(observed: SocleServer, tmp_path: Path) -> None:
    server = observed
    repo = write_repo(tmp_path / "repo", {})
    add_app(repo, "shop", ERRORS_APP, {"metrics": {"port": "http"}})
    slo = {
        "apiVersion": "socle/v1",
        "kind": "SLO",
        "metadata": {"name": "shop-availability"},
        "spec": {
            "objective": 99.9,
            "window": "30d",
            "total": 'demo_requests_total{app="shop"}',
            "errors": 'demo_requests_total{app="shop",code="500"}',
        },
    }
    (repo / "slo.yaml").write_text(yaml.safe_dump(slo, sort_keys=False))
    server.cli("apply", str(repo), "--yes")

    def rule_file_written() -> bool:  # even when the apply lands while Prometheus starts
        prometheus = server.status()["control_plane"]["observe"]["prometheus"] or {}
        rules = prometheus.get("rules") or {}
        assert rules.get("error") is None, rules
        return "slo-shop-availability.yml" in rules.get("files", [])

    wait_for(rule_file_written, 60, "the SLO's rule file")

    def burning() -> list[dict[str, Any]]:
        alerts = json.loads(server.cli("alerts", "--json").stdout)["alerts"]
        return [a for a in alerts if a["labels"].get("slo") == "shop-availability"]

    fired = wait_for(burning, 90, "an SLO burn-rate alert")
    assert {a["labels"]["alertname"] for a in fired} >= {"shop-availability-burn-page-fast"}
    rows = json.loads(server.cli("slo", "--json").stdout)
    assert [r["name"] for r in rows] == ["shop-availability"]
    assert rows[0]["error_ratio"] == pytest.approx(0.5, abs=0.05)
    assert rows[0]["budget_remaining"] < 0  # half the events fail: the budget is gone
    assert rows[0]["burn_rate"]["1h"] > 14.4
    assert "shop-availability" in server.cli("slo").stdout


def test_a_rule_applied_while_prometheus_starts_is_loaded(
    tmp_path: Path, observed: SocleServer
) -> None:
    """The first apply often lands while the embedded Prometheus is still starting (before
    Socle listens for AlertRule changes): its rules must reach Prometheus all the same."""
    server = observed
    repo = tmp_path / "repo"
    repo.mkdir()
    rule = {
        "apiVersion": "socle/v1",
        "kind": "AlertRule",
        "metadata": {"name": "always-on"},
        "spec": {"expr": "vector(1)", "severity": "info"},
    }
    (repo / "rule.yaml").write_text(yaml.safe_dump(rule))
    server.cli("apply", str(repo), "--yes")
    wait_for(
        lambda: query(server, 'ALERTS{alertname="always-on",alertstate="firing"}'),
        60,
        "the applied rule to fire in Prometheus",
    )


ERROR_LOGGER_APP = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "2")
            self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *args):
            pass

    def errors():
        for n in range(5):
            print(json.dumps({"level": "error", "msg": f"payment {n} refused"}), flush=True)
            print(json.dumps({"level": "info", "msg": "all good"}), flush=True)
            time.sleep(0.2)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=errors, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


def test_a_log_query_alert_fires(observed: SocleServer, tmp_path: Path) -> None:
    """An AlertRule on the log store: the app's JSON lines with level=error, counted by
    the LogQL query, fire the alert through Prometheus and Alertmanager; a log query that
    returns lines instead of a number is refused at plan time, nothing applied."""
    server = observed
    bad = write_repo(tmp_path / "bad", {})
    rule = {
        "apiVersion": "socle/v1",
        "kind": "AlertRule",
        "metadata": {"name": "payments-refused"},
        "spec": {"logQuery": '{app="payments"} |= "refused"'},
    }
    (bad / "rule.yaml").write_text(yaml.safe_dump(rule, sort_keys=False))
    refused = server.cli("apply", str(bad), "--yes", check=False)
    assert refused.returncode != 0 and "spec.logQuery" in refused.stderr
    assert "returns lines, not numbers" in refused.stderr
    # A regular expression the log store's RE2 refuses is a manifest problem too.
    rule["spec"] = {"logQuery": 'count_over_time({app="payments"} |~ "(?=x)" [5m])'}
    (bad / "rule.yaml").write_text(yaml.safe_dump(rule, sort_keys=False))
    refused = server.cli("apply", str(bad), "--yes", check=False)
    assert refused.returncode != 0 and "spec.logQuery" in refused.stderr
    assert "bad regular expression '(?=x)'" in refused.stderr
    assert server.cli("history", "--json").stdout.strip() in ("[]", "")

    repo = write_repo(tmp_path / "repo", {})
    add_app(repo, "payments", ERROR_LOGGER_APP, {})
    rule["spec"] = {
        "logQuery": 'sum by (app) (count_over_time({app="payments"} | json | level="error" [5m]))',
        "above": 3,
        "annotations": {"summary": "{{ $value }} payment errors in 5 minutes"},
    }
    (repo / "rule.yaml").write_text(yaml.safe_dump(rule, sort_keys=False))
    server.cli("apply", str(repo), "--yes")
    status = server.cli("status").stdout
    assert "logs: sum by (app)" in status

    value = wait_for(
        lambda: query(server, 'socle_log_query_value{socle_rule="payments-refused"} == 5'),
        90,
        "the log query's value (5 error lines) in Prometheus",
    )
    assert value[0]["metric"]["app"] == "payments"

    def fired() -> list[dict[str, Any]]:
        alerts = json.loads(server.cli("alerts", "--json").stdout)["alerts"]
        return [a for a in alerts if a["labels"].get("alertname") == "payments-refused"]

    alert = wait_for(fired, 90, "the log-query alert in Alertmanager")[0]
    assert alert["labels"]["app"] == "payments" and alert["labels"]["socle_rule"]
    assert alert["annotations"]["summary"] == "5 payment errors in 5 minutes"


def test_alerts_say_when_nothing_evaluates_them(server: SocleServer) -> None:
    """The default test server runs neither Prometheus nor Alertmanager: `socle alerts`
    says so and fails, instead of "No active alerts"."""
    done = server.cli("alerts", check=False)
    assert done.returncode == 1, done.stdout
    assert "no Alertmanager runs and no Prometheus answers" in done.stderr
    assert "No active alerts" not in done.stdout
    silences = server.cli("silence", "list", check=False)
    assert silences.returncode == 1 and "no Alertmanager" in silences.stderr
