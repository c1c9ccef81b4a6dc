"""The embedded Prometheus and Alertmanager, as real processes on free loopback ports.

- a generated config promtool refuses never replaces the live one (the server keeps
  running with it), and a bad rule file is refused the same way;
- the built-in rules pass ``promtool check rules``;
- a Prometheus that dies is started again by its supervisor;
- without Alertmanager, the alerts Prometheus evaluates (firing, pending) are listed;
- federation (``/federate``) answers the matching series, refuses a bad selector;
- Alertmanager's v2 API: a silence added, listed and expired (again: said so; unknown: 404).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from socle.errors import NotFoundError, ObserveError, QueryRejected
from socle.observe.alerts.manager import AlertmanagerServer
from socle.observe.alerts.rules import builtin_rule_files
from socle.observe.metrics.prometheus import (
    PrometheusQuery,
    PrometheusServer,
    ScrapeSetup,
    check_rules,
    render_config,
)
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.observe.service import Observe, Unavailable
from socle.tasks import TaskMonitor
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
    reason="needs Debian's prometheus and prometheus-alertmanager",
)


async def until(check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[PrometheusServer]:
    monitor = TaskMonitor()
    server = PrometheusServer(
        tmp_path / "prometheus",
        binary=shutil.which("prometheus") or "prometheus",
        host="127.0.0.1",
        port=free_port(),
        retention="1h",
        retention_size="0",
        tasks=monitor.group("prometheus"),
    )
    await server.prepare("not-a-real-token")
    setup = ScrapeSetup(
        socle_url="http://127.0.0.1:1",  # nothing there: targets are simply down
        token_file=server.token_file,
        scrape_interval=1,
        rules_dir=server.rules_dir,
    )
    await server.write_config(render_config(setup), reload=False)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_bad_config_and_bad_rules_never_replace_working_ones(
    prometheus: PrometheusServer,
) -> None:
    live = prometheus.config_file.read_text()
    broken = {"global": {"scrape_interval": "fast"}, "scrape_configs": []}
    with pytest.raises(ObserveError, match="refused, the running one is kept"):
        await prometheus.write_config(broken)
    assert prometheus.config_file.read_text() == live
    assert not prometheus.config_file.with_name("prometheus.yml.new").exists()

    good = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n"
    await prometheus.write_rules({"a.yml": good})
    with pytest.raises(ObserveError, match="refuses the rules in"):
        await prometheus.write_rules({"a.yml": good.replace("up == 0", "sum(("), "b.yml": good})
    assert (prometheus.rules_dir / "a.yml").read_text() == good
    assert sorted(p.name for p in prometheus.rules_dir.iterdir()) == ["a.yml"]

    assert prometheus.web is not None
    async with httpx.AsyncClient(auth=prometheus.web.pair) as client:
        rules = (await client.get(f"{prometheus.url}/api/v1/rules")).json()
    names = [r["name"] for g in rules["data"]["groups"] for r in g["rules"]]
    assert names == ["A"]  # the reload after the good write took effect


async def test_builtin_rules_pass_promtool(tmp_path: Path) -> None:
    for name, text in builtin_rule_files().items():
        path = tmp_path / name
        path.write_text(text)
        await check_rules(shutil.which("promtool") or "promtool", path)


async def test_a_dead_prometheus_is_started_again(prometheus: PrometheusServer) -> None:
    first = prometheus.to_dict()["pid"]
    assert isinstance(first, int)
    os.kill(first, signal.SIGKILL)

    async def back() -> bool:
        pid = prometheus.to_dict()["pid"]
        if pid in (None, first):
            return False
        assert prometheus.web is not None
        try:
            async with httpx.AsyncClient(auth=prometheus.web.pair) as client:
                return (await client.get(f"{prometheus.url}/-/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    await until(back)
    assert prometheus.to_dict()["restarts"] == 1


async def test_prometheus_api_is_closed_to_other_loopback_users(
    prometheus: PrometheusServer,
) -> None:
    """Apps share the host's loopback: without the password nothing answers, not even
    ``/-/quit``; the files holding it are owner-only and the web config holds only a hash."""
    web = prometheus.web
    assert web is not None
    async with httpx.AsyncClient() as anonymous:
        for method, path in (
            ("GET", "/api/v1/query?query=up"),
            ("GET", "/api/v1/status/config"),
            ("POST", "/-/reload"),
            ("POST", "/-/quit"),
        ):
            answer = await anonymous.request(method, prometheus.url + path)
            assert answer.status_code == 401, (method, path)
        wrong = await anonymous.get(f"{prometheus.url}/-/ready", auth=("socle", "guess"))
        assert wrong.status_code == 401
    assert prometheus.running
    for path in (web.password_file, web.config_file):
        assert path.stat().st_mode & 0o777 == 0o600
    assert web.password not in web.config_file.read_text()
    query = PrometheusQuery(prometheus.url, auth=web.pair)
    assert "result" in await query.get("query", {"query": "1"})
    await prometheus.reload()  # Socle's own client still reloads
    # What Prometheus writes itself (TSDB, WAL) is owner-only too, like all of SOCLE_HOME.
    opened = [p for p in prometheus.folder.rglob("*") if p.stat().st_mode & 0o077]
    assert opened == [] and any(prometheus.folder.rglob("wal"))


async def test_a_huge_answer_is_refused_not_held(prometheus: PrometheusServer) -> None:
    assert prometheus.web is not None
    small = PrometheusQuery(prometheus.url, auth=prometheus.web.pair, max_bytes=4096)
    now = time.time()
    span = {"query": "vector(1)", "start": f"{now - 10000}", "end": f"{now}", "step": "1"}
    with pytest.raises(QueryRejected, match="larger than"):
        await small.get("query_range", span)
    assert (await small.get("query", {"query": "vector(1)"}))["result"]
    with pytest.raises(QueryRejected, match="refused the query"):
        await small.get("query", {"query": "sum(("})


async def test_federation_answers_the_matching_series_in_text_format(
    prometheus: PrometheusServer,
) -> None:
    """``/api/v1/metrics/federate`` relays Prometheus' ``/federate``: what a team's own
    Prometheus scrapes; a bad selector is the caller's error, bounded like a query."""
    assert prometheus.web is not None
    query = PrometheusQuery(prometheus.url, auth=prometheus.web.pair)

    # No target answers in this fixture: recording rules make the series to federate.
    rules = (
        "groups:\n- name: g\n  rules:\n"
        "  - record: team:one\n    expr: vector(1)\n    labels: {app: api}\n"
        "  - record: team:two\n    expr: vector(2)\n    labels: {app: web}\n"
    )
    await prometheus.write_rules({"team.yml": rules})

    async def recorded() -> bool:
        return b"team:one" in await query.federate(['{app="api"}'])

    await until(recorded)
    page = (await query.federate(['{app="api"}', "nothing_matches_this"])).decode()
    assert page.startswith("# TYPE team:one") and 'team:one{app="api",instance=""} 1 ' in page
    assert "team:two" not in page  # only what matched
    with pytest.raises(QueryRejected, match="refused the selector"):
        await query.federate(["sum(("])
    small = PrometheusQuery(prometheus.url, auth=prometheus.web.pair, max_bytes=16)
    with pytest.raises(QueryRejected, match="larger than"):
        await small.federate(['{app="api"}'])


async def test_without_alertmanager_the_alerts_prometheus_evaluates_are_shown(
    prometheus: PrometheusServer,
) -> None:
    """SOCLE_ALERTMANAGER=off: ``socle alerts`` lists Prometheus' own alerts (firing as
    ``active``, waiting on ``for`` as ``pending``) instead of an empty, reassuring list."""
    assert prometheus.web is not None
    rules = (
        "groups:\n- name: g\n  rules:\n"
        "  - alert: Now\n    expr: vector(1)\n    labels: {app: api}\n"
        "    annotations: {summary: fires at once}\n"
        "  - alert: Later\n    expr: vector(1)\n    for: 1h\n"
    )
    await prometheus.write_rules({"a.yml": rules})
    observe = Observe(
        ControlPlaneMetrics(),
        address="127.0.0.1:1",
        instances=list,
        resources=list,
        app_metrics=dict,
    )
    with pytest.raises(Unavailable):
        await observe.evaluated_alerts()
    observe.query = PrometheusQuery(prometheus.url, auth=prometheus.web.pair)

    async def both() -> bool:
        return len(await observe.evaluated_alerts()) == 2

    await until(both)
    by_name = {a["labels"]["alertname"]: a for a in await observe.evaluated_alerts()}
    assert by_name["Now"]["status"]["state"] == "active"
    assert by_name["Now"]["annotations"] == {"summary": "fires at once"}
    assert by_name["Now"]["labels"]["app"] == "api" and by_name["Now"]["startsAt"]
    assert by_name["Later"]["status"]["state"] == "pending"


async def test_alertmanager_silences_through_the_v2_api(tmp_path: Path) -> None:
    monitor = TaskMonitor()
    server = AlertmanagerServer(
        tmp_path / "alertmanager",
        binary=shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
        host="127.0.0.1",
        port=free_port(),
        tasks=monitor.group("alertmanager"),
    )
    await server.prepare("not-a-real-token")
    await server.write_config(socle_url="http://127.0.0.1:1", ca_file=None)
    await server.start()
    try:
        # No gossip listener: only the web port is open.
        assert "--cluster.listen-address=" in " ".join(
            Path(f"/proc/{server.to_dict()['pid']}/cmdline").read_bytes().decode().split("\0")
        )
        now = datetime.now(UTC)
        silence_id = await server.add_silence(
            {
                "matchers": [{"name": "alertname", "value": "X", "isRegex": False}],
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
                "createdBy": "test",
                "comment": "test",
            }
        )
        listed = await server.silences()
        assert [(s["id"], s["status"]["state"]) for s in listed] == [(silence_id, "active")]
        assert await server.expire_silence(silence_id) is True
        assert [s["status"]["state"] for s in await server.silences()] == ["expired"]
        # Expiring it again says so; an unknown id is "not found" (Alertmanager itself
        # answers its DELETE with a 500), and nothing changes.
        assert await server.expire_silence(silence_id) is False
        with pytest.raises(NotFoundError, match="no silence") as caught:
            await server.expire_silence("00000000-0000-0000-0000-000000000000")
        assert caught.value.http_status == 404 and "silence list" in (caught.value.hint or "")
        assert [s["id"] for s in await server.silences()] == [silence_id]
        assert await server.alerts() == []
        # Its API is closed to anyone without the password (apps share the loopback).
        async with httpx.AsyncClient() as anonymous:
            for method, path in (
                ("GET", "/api/v2/silences"),
                ("POST", "/api/v2/alerts"),
                ("POST", "/api/v2/silences"),
            ):
                answer = await anonymous.request(method, server.url + path, json=[])
                assert answer.status_code == 401, (method, path)
    finally:
        await server.stop()


async def test_agent_mode_forwards_samples_to_a_teams_prometheus(tmp_path: Path) -> None:
    """SOCLE_PROMETHEUS=agent: the embedded Prometheus scrapes what Socle's http_sd lists
    and forwards it (remote_write) to another, real Prometheus, which answers queries."""
    import json
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    team_port = free_port()
    team_dir = tmp_path / "team"
    team_dir.mkdir()
    (team_dir / "p.yml").write_text("global: {}\n")
    team = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={team_dir / 'p.yml'}",
            f"--storage.tsdb.path={team_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{team_port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    class Sd(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            groups = []
            if "job=socle" in self.path and "instances" not in self.path:
                groups = [{"targets": [f"127.0.0.1:{team_port}"], "labels": {}}]
            body = json.dumps(groups).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    sd = ThreadingHTTPServer(("127.0.0.1", 0), Sd)
    threading.Thread(target=sd.serve_forever, daemon=True).start()
    monitor = TaskMonitor()
    agent = PrometheusServer(
        tmp_path / "agent",
        binary=shutil.which("prometheus") or "prometheus",
        host="127.0.0.1",
        port=free_port(),
        retention="1h",
        retention_size="0",
        tasks=monitor.group("prometheus"),
        agent=True,
    )
    try:
        await agent.prepare("not-a-real-token")
        setup = ScrapeSetup(
            socle_url=f"http://127.0.0.1:{sd.server_address[1]}",
            token_file=agent.token_file,
            scrape_interval=1,
            rules_dir=agent.rules_dir,
            alertmanager="127.0.0.1:1",
            remote_write=f"http://127.0.0.1:{team_port}/api/v1/write",
            agent=True,
        )
        config = render_config(setup)
        assert "rule_files" not in config and "alerting" not in config
        await agent.write_config(config, reload=False)
        await agent.start()

        async def forwarded() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    response = await client.get(
                        f"http://127.0.0.1:{team_port}/api/v1/query",
                        params={"query": 'up{job="socle"}'},
                    )
            except httpx.HTTPError:
                return False
            return bool(response.status_code == 200 and response.json()["data"]["result"])

        await until(forwarded, 90)
    finally:
        await agent.stop()
        sd.shutdown()
        sd.server_close()
        team.send_signal(signal.SIGKILL)
        team.wait()


async def test_only_new_or_changed_rule_files_are_checked_again(tmp_path: Path) -> None:
    """Work grows with the change: an apply that changes one AlertRule among many costs one
    promtool run, not one per rule (a real promtool behind a wrapper that counts its runs)."""
    real = shutil.which("promtool") or "promtool"
    calls = tmp_path / "calls"
    wrapper = tmp_path / "promtool"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o700)
    server = PrometheusServer(
        tmp_path / "prometheus",
        binary=shutil.which("prometheus") or "prometheus",
        host="127.0.0.1",
        port=free_port(),
        retention="1h",
        retention_size="0",
        tasks=TaskMonitor().group("prometheus"),
    )
    server.promtool = str(wrapper)
    server.rules_dir.mkdir(parents=True)

    def rule(name: str, expr: str = "up == 0") -> str:
        return f"groups:\n- name: {name}\n  rules:\n  - alert: {name}\n    expr: {expr}\n"

    def runs() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    files = {f"alertrule-r{i}.yml": rule(f"r{i}") for i in range(5)}
    await server.write_rules(files)
    assert runs() == 5
    files["alertrule-r2.yml"] = rule("r2", "up == 1")
    await server.write_rules(files)
    assert runs() == 6  # only the changed one
    with pytest.raises(ObserveError):  # a refused change...
        await server.write_rules({**files, "alertrule-r3.yml": rule("r3", "sum((")})
    assert runs() == 7
    del files["alertrule-r4.yml"]
    await server.write_rules(files)  # ...leaves the live files as they were: nothing to check
    assert runs() == 7
    assert sorted(p.name for p in server.rules_dir.glob("*.yml")) == sorted(files)
    assert (server.rules_dir / "alertrule-r2.yml").read_text() == files["alertrule-r2.yml"]
