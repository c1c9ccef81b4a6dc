"""The ingress like a user meets it: a stable URL per app through real nginx, Routes,
`socle routes`, bad and hostile routes refused at plan, healthy upstreams only, rollouts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.socle_fixture import SocleServer, children_of, wait_for, write_repo


def ingress_port(server: SocleServer) -> int:
    return int(server.env["SOCLE_INGRESS_HTTP"].rsplit(":", 1)[1])


def through(server: SocleServer, host: str, path: str = "/", **kw: Any) -> httpx.Response:
    """A request to the ingress for ``host`` (what a browser sends for that URL)."""
    return httpx.get(
        f"http://127.0.0.1:{ingress_port(server)}{path}",
        headers={"Host": host, **kw.pop("headers", {})},
        timeout=10,
        **kw,
    )


def add_docs(repo: Path, docs: list[dict[str, Any]], name: str = "routes.yaml") -> None:
    (repo / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))


def route(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "socle/v1", "kind": "Route", "metadata": {"name": name}, "spec": spec}


def routes(server: SocleServer) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(server.cli("routes", "--json").stdout)
    return data


def test_default_url_is_stable_across_rollouts(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2, "env": {"VERSION": "v1"}}})
    out = server.cli("apply", str(repo), "--yes").stdout
    url = f"http://web.default.localhost:{ingress_port(server)}/"
    assert f"answers at {url}" in out, out
    assert server.app("web")["url"] == url
    assert url in server.cli("status").stdout

    seen = wait_for(
        lambda: (
            {through(server, "web.default.localhost").json()["instance"] for _ in range(8)}
            if through(server, "web.default.localhost").status_code == 200
            else None
        ),
        what="both instances behind the ingress",
    )
    assert seen == {i["id"] for i in server.app("web")["instances"]}

    table = routes(server)
    assert table["enabled"] and table["nginx"]["pid"]
    row = next(r for r in table["routes"] if r["target"] == "web")
    assert row["kind"] == "default" and row["healthy"] == 2 and row["url"] == url
    assert "default-web" in server.cli("routes").stdout

    # A rollout gives the replicas new ports; the URL keeps answering, with the new version.
    (repo / "apps.yaml").write_text(
        (repo / "apps.yaml").read_text().replace("VERSION: v1", "VERSION: v2")
    )
    server.cli("apply", str(repo), "--yes")
    wait_for(
        lambda: through(server, "web.default.localhost").json()["version"] == "v2",
        what="the new version through the same URL",
    )
    assert server.app("web")["url"] == url

    # Unknown hosts get 404 from the ingress, never an app.
    assert through(server, "nope.localhost").status_code == 404


def test_route_kind_serves_only_healthy_instances(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"api": {"replicas": 2}})
    add_docs(
        repo,
        [
            route(
                "api",
                host="shop.example.test",
                path="/api",
                rewrite="/",
                target={"app": "api", "port": "http"},
                headers={"X-Served-By": "socle; ingress }"},
                loadBalancing="least_conn",
            ),
            route("old", host="old.example.test", redirect={"to": "https://shop.example.test/"}),
        ],
    )
    server.cli("apply", str(repo), "--yes")
    response = wait_for(
        lambda: (r := through(server, "shop.example.test", "/api/x")).status_code == 200 and r,
        what="the route",
    )
    assert response.headers["x-served-by"] == "socle; ingress }"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert through(server, "shop.example.test", "/apix").status_code == 404
    moved = through(server, "old.example.test")
    assert moved.status_code == 302 and moved.headers["location"] == "https://shop.example.test/"
    # The app has a Route: no default route for it.
    assert through(server, "api.default.localhost").status_code == 404

    # An instance failing its health check (frozen: it cannot answer) leaves the upstreams;
    # every request then goes to the other one, none waits on the frozen one.
    app = server.app("api")
    sick = next(i for i in app["instances"] if i["ordinal"] == 0)
    os.kill(sick["pid"], signal.SIGSTOP)
    try:
        wait_for(
            lambda: (
                [
                    u["instance"]
                    for u in next(r for r in routes(server)["routes"] if r["name"] == "api")[
                        "upstreams"
                    ]
                ]
                == [i["id"] for i in app["instances"] if i["ordinal"] == 1]
            ),
            what="the sick instance out of the upstreams",
        )
        for _ in range(10):
            answer = through(server, "shop.example.test", "/api/")
            assert answer.status_code == 200 and answer.json()["pid"] != sick["pid"]
    finally:
        with contextlib.suppress(ProcessLookupError):  # the runtime may have replaced it
            os.kill(sick["pid"], signal.SIGCONT)


def test_bad_and_hostile_routes_are_refused_at_plan(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"api": {}})
    target = {"app": "api", "port": "http"}
    hostile = [
        ({"host": "a.test; include /etc/passwd", "target": target}, "host"),
        ({"host": "a.test", "path": "/x;}", "target": target}, "path"),
        ({"host": "a.test", "target": target, "headers": {"X": "$host"}}, "headers"),
        ({"host": "a.test", "target": target, "headers": {"X": "a\nb"}}, "headers"),
        ({"host": "a.test", "target": target, "headers": {"X;": "a"}}, "headers"),
        ({"host": "a.test", "redirect": {"to": 'https://x.test/";return 200 "pwned'}}, "redirect"),
        ({"host": "a.test", "target": {"app": "api", "port": "nope"}}, "spec.target.port"),
        ({"host": "a.test", "target": {"app": "ghost", "port": "http"}}, "ghost"),
    ]
    for spec, word in hostile:
        add_docs(repo, [route("bad", **spec)])
        result = server.cli("plan", str(repo), check=False)
        assert result.returncode == 1, (spec, result.stdout)
        assert "routes.yaml:" in result.stderr and word in result.stderr, result.stderr
    assert server.status()["objects"] == []
    conf = Path(server.env["SOCLE_HOME"]) / "ingress" / "nginx.conf"
    assert "a.test" not in conf.read_text()


def test_status_shows_each_routes_real_state(server: SocleServer, tmp_path: Path) -> None:
    """`socle status` says whether a Route serves, has no healthy upstream or is waiting for
    its certificate, not always `ready`."""
    repo = write_repo(tmp_path / "repo", {"api": {}, "idle": {"replicas": 0}})
    add_docs(
        repo,
        [
            route("shop", host="shop.test", target={"app": "api", "port": "http"}),
            route("empty", host="empty.test", target={"app": "idle", "port": "http"}),
            route("moved", host="moved.test", redirect={"to": "https://shop.test/"}),
        ],
    )
    server.cli("apply", str(repo), "--yes")

    def states() -> dict[str, tuple[str, str]]:
        return {
            o["name"]: (o["health"], o["message"])
            for o in server.status()["objects"]
            if o["kind"] == "Route"
        }

    wait_for(lambda: states()["shop"][0] == "serving", what="the shop route serving")
    got = states()
    assert got["shop"] == ("serving", "1 healthy upstream(s)"), got
    assert got["empty"][0] == "no_healthy_upstream" and "idle" in got["empty"][1], got
    assert got["moved"] == ("serving", "redirects to https://shop.test/"), got
    text = server.cli("status").stdout
    assert "Route/shop" in text and "serving" in text and "no_healthy_upstream" in text, text

    # Per-route metrics at /metrics: requests through the route, with its labels only.
    for _ in range(5):
        assert through(server, "shop.test").status_code == 200
    assert through(server, "empty.test").status_code == 503
    labels = 'app="api",code_class="2xx",env="default",route="shop"'

    def scraped() -> str | None:
        page = server.api("GET", "/metrics").text
        return page if f"socle_ingress_requests_total{{{labels}}} 5.0" in page else None

    page = wait_for(scraped, what="the route's requests in /metrics")
    assert (
        'socle_ingress_requests_total{app="idle",code_class="5xx",env="default",route="empty"} 1.0'
        in page
    )
    assert "shop.test" not in page


def test_nginx_restarted_if_killed_and_adopted_across_restarts(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}})
    server.cli("apply", str(repo), "--yes")
    wait_for(lambda: through(server, "web.default.localhost").status_code == 200, what="route")
    pid = routes(server)["nginx"]["pid"]
    workers = children_of({pid})
    os.kill(pid, signal.SIGKILL)
    for worker in workers:  # a killed master leaves its workers holding the port
        os.kill(worker, signal.SIGKILL)
    wait_for(
        lambda: (
            routes(server)["nginx"]["pid"] not in (None, pid)
            and through(server, "web.default.localhost").status_code == 200
        ),
        what="nginx started again",
    )
    new_pid = routes(server)["nginx"]["pid"]
    # A control plane stopped with its apps kept leaves nginx serving; the next adopts it.
    server.stop(keep_apps=True)
    assert through(server, "web.default.localhost").status_code == 200
    server.start()
    assert routes(server)["nginx"]["pid"] == new_pid
    wait_for(lambda: through(server, "web.default.localhost").status_code == 200, what="route")
    # `socle down` (apps not kept) stops nginx too.
    server.stop()
    wait_for(lambda: not Path(f"/proc/{new_pid}").exists(), what="nginx stopped")


def test_rolling_update_under_load_fails_no_request(server: SocleServer, tmp_path: Path) -> None:
    """Steady traffic through the ingress while every replica is replaced: instances leave
    the upstreams (nginx reloaded) before they stop, and nginx retries idempotent requests
    on another upstream, so not one request fails."""
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2, "env": {"VERSION": "v1"}}})
    server.cli("apply", str(repo), "--yes")
    wait_for(lambda: through(server, "web.default.localhost").status_code == 200, what="route")

    stop = threading.Event()
    results: list[tuple[int, str]] = []
    errors: list[str] = []

    retried: list[str] = []

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = get(client)
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    # A reload closes the old workers' keep-alive connections; a request
                    # sent at that instant on such a connection gets no answer. HTTP lets
                    # a client send an idempotent request again (RFC 9112 9.3.1), and
                    # browsers do: so does this one, once, and counts it.
                    retried.append(repr(exc))
                    try:
                        r = get(client)
                    except (httpx.HTTPError, ValueError) as again:
                        errors.append(repr(again))
                        continue
                except (httpx.HTTPError, ValueError) as exc:
                    errors.append(repr(exc))
                    continue
                results.append((r.status_code, r.json()["version"] if r.is_success else ""))

    def get(client: httpx.Client) -> httpx.Response:
        return client.get(
            f"http://127.0.0.1:{ingress_port(server)}/", headers={"Host": "web.default.localhost"}
        )

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        (repo / "apps.yaml").write_text(
            (repo / "apps.yaml").read_text().replace("VERSION: v1", "VERSION: v2")
        )
        server.cli("apply", str(repo), "--yes")
        wait_for(lambda: results and results[-1][1] == "v2", what="v2 served")
        mark = len(results)
        wait_for(lambda: len(results) > mark + 50, what="more traffic after the rollout")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    failed = [code for code, _ in results if code != 200]
    print(
        f"{len(results)} requests during the rollout, {len(failed)} failed, "
        f"{len(retried)} sent again after a keep-alive close, {errors[:3]}"
    )
    assert not errors and not failed, (errors[:5], failed[:5])
    assert {v for _, v in results} == {"v1", "v2"}
