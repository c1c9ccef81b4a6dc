"""Per-route metrics from the real nginx: real requests through the ingress, figures in the
Prometheus exposition equal to what was sent; hostile requests add no label."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from socle.model.route import Route
from socle.network.ingress import AppPorts, Endpoint, Ingress, Listen, Nginx
from socle.network.ingress.nginx import NGINX, worker_user
from socle.observe.metrics.ingress import IngressTraffic
from tests.integration.network.ingress.test_nginx_ingress import Endpoints
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")


class StatusBackend:
    """Answers ``/s/CODE/...`` with that status and a body of ``CODE`` bytes' length."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = self.path.split("/")
                code = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 200
                body = b"x" * (code // 10)
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def backend() -> Iterator[StatusBackend]:
    made = StatusBackend()
    yield made
    made.server.shutdown()
    made.server.server_close()


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def raw(port: int, data: bytes) -> None:
    """Send bytes no HTTP client would, read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        while sock.recv(65536):
            pass


async def test_metrics(tmp_path: Path, backend: StatusBackend) -> None:
    os.chmod(tmp_path, 0o755)
    prefix, temp = tmp_path / "home" / "ingress", tmp_path / "t"
    user = worker_user()
    listen = Listen(
        http=("127.0.0.1", free_port()),
        https=("127.0.0.1", free_port()),
        prefix=prefix,
        temp=temp,
        user=user,
        metrics_log=prefix / "logs" / "metrics.log",
    )
    endpoints = Endpoints()
    endpoints.set(Endpoint("web", "web-1", "127.0.0.1", {"http": backend.port}))
    shop = Route.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "Route",
            "metadata": {"name": "shop"},
            "spec": {"host": "shop.test", "target": {"app": "web", "port": "http"}},
        }
    )
    nginx = Nginx(prefix, temp=temp)
    ingress = Ingress(
        nginx,
        listen,
        endpoints,
        routes=lambda: {"shop": shop},
        apps=lambda: [AppPorts("web", "prod", ("http",)), AppPorts("api", "dev", ("http",))],
    )
    # Polled often and rotated every ~300 bytes: real reopens by nginx happen mid-traffic.
    traffic = IngressTraffic(
        prefix / "logs" / "metrics.log",
        ingress.route_labels,
        reopen=nginx.reopen_logs,
        poll=0.05,
        rotate_bytes=300,
    )
    await traffic.start()
    registry = CollectorRegistry()
    registry.register(traffic)
    try:
        await ingress.start()
        rotations = 0
        original = traffic._rotate

        def counted() -> None:
            nonlocal rotations
            rotations += 1
            original()

        traffic._rotate = counted  # type: ignore[method-assign]
        base = f"http://127.0.0.1:{listen.http[1]}"
        sent = {"200": 7, "201": 2, "404": 3, "503": 4}
        total_bytes = 0
        async with httpx.AsyncClient(timeout=10) as client:
            for code, count in sent.items():
                for i in range(count):
                    r = await client.get(f"{base}/s/{code}/{i}", headers={"Host": "shop.test"})
                    assert r.status_code == int(code)
                    total_bytes += len(r.content)
            # Hostile requests: a huge URI on the route, weird header bytes, unknown hosts.
            long = "/s/200/" + "%ff\u00e9<script>" * 200
            r = await client.get(base + long, headers={"Host": "shop.test"})
            assert r.status_code == 200
            total_bytes += len(r.content)
            r = await client.get(base + long * 10, headers={"Host": "shop.test"})
            assert r.status_code == 414  # refused before any route: no_route
            for i in range(20):
                await client.get(f"{base}/", headers={"Host": f"h{i}.evil.test"})
        await asyncio.to_thread(
            raw,
            listen.http[1],
            b"GET /s/200/\xff\x00 HTTP/1.1\r\nHost: shop.test\r\nX-A: \x01\xfe\xff"
            b"\r\nConnection: close\r\n\r\n",
        )
        await asyncio.to_thread(raw, listen.http[1], b"\x16\x03\x01\xff\xff garbage\r\n\r\n")
        await asyncio.to_thread(
            raw,
            listen.http[1],
            b'GET / HTTP/1.1\r\nHost: shop.test" route="x\r\nConnection: close\r\n\r\n',
        )

        shop_labels = (("app", "web"), ("env", "prod"), ("route", "shop"))
        want_total = sum(sent.values()) + 1  # the long URI

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            got = parse(generate_latest(registry).decode())
            count = got.get(("socle_ingress_request_duration_seconds_count", shop_labels), 0)
            if (
                count >= want_total
                and got.get(("socle_ingress_records_dropped_total", (("reason", "no_route"),)), 0)
                >= 21
            ):
                break
            assert loop.time() < deadline, got
            await asyncio.sleep(0.1)

        def requests(code_class: str) -> float:
            key = (
                "socle_ingress_requests_total",
                (("app", "web"), ("code_class", code_class), ("env", "prod"), ("route", "shop")),
            )
            return got.get(key, 0)

        # The raw request with weird bytes (nginx answers 400 before any route) and the
        # TLS garbage count as no_route; none of them adds a label.
        assert count == want_total
        assert requests("2xx") == 7 + 2 + 1
        assert requests("4xx") == 3
        assert requests("5xx") == 4
        assert got[("socle_ingress_response_bytes_total", shop_labels)] == total_bytes
        assert got[("socle_ingress_upstream_response_duration_seconds_count", shop_labels)] == (
            want_total
        )
        assert (
            got[
                (
                    "socle_ingress_request_duration_seconds_bucket",
                    (*shop_labels[:2], ("le", "+Inf"), shop_labels[2]),
                )
            ]
            == want_total
        )
        routes = {dict(labels).get("route") for _, labels in got} - {None}
        assert routes == {"shop"}
        assert got[("socle_ingress_records_dropped_total", (("reason", "malformed"),))] == 0
        assert got[("socle_ingress_records_dropped_total", (("reason", "unknown_route"),))] == 0
        assert rotations >= 1
    finally:
        await ingress.stop(stop_nginx=True)
        await traffic.close()
