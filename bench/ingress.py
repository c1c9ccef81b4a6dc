"""Ingress overhead and reaction time, on the nginx Socle renders and runs.

(a) ``wrk`` against one app instance (a granian ASGI app) directly, then through Socle's
    ingress (nginx, configuration from :mod:`socle.network.ingress`), and (d) through
    HAProxy and Caddy configured by hand for the same upstream: requests/s, p50 and p99,
    and the ratios. Target: p50 through the ingress within 10 % of direct.
(b) Time from an endpoint becoming healthy to its first request through the ingress, and
    from its leaving to its last one (target <= 1 s each).

Saturation runs use ``wrk -t2 -c32``; on a 2-core machine wrk, the app and the proxy then
share the same cores, so the proxy's CPU shows as latency. The one-connection runs show
the latency a request gains. Prints JSON. Run: ``.venv/bin/python bench/ingress.py
[seconds per wrk run]`` (as root or not; about 50 s with the default 5 s runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from _harness import ROOT, percentiles

from socle.model.route import Route
from socle.network.ingress import AppPorts, Endpoint, Ingress, Listen, Nginx
from socle.network.ingress.nginx import worker_user

APP = textwrap.dedent(
    """
    import os
    NAME = os.environ.get("NAME", "app").encode()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b'{"ok":true,"name":"' + NAME + b'"}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def process(argv: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(port)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def backend(folder: Path, name: str) -> tuple[list[str], int, dict[str, str]]:
    (folder / "benchapp.py").write_text(APP)
    port = free_port()
    argv = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--no-ws", "--log-level", "error", "benchapp:app",
    ]  # fmt: skip
    return argv, port, {"PYTHONPATH": str(folder), "NAME": name}


def wrk(url: str, seconds: int, host: str | None = None, connections: int = 32) -> dict[str, float]:
    threads = min(2, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if host:
        argv[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 30)
    text = out.stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not match:
            raise RuntimeError(f"no {label} in wrk output:\n{text}")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latency("50%"),
        "p99_ms": latency("99%"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",  # type: ignore[dict-item]
    }


class Endpoints:
    def __init__(self) -> None:
        self.items: list[Endpoint] = []
        self.listeners: list[Callable[[], None]] = []

    def endpoints(self) -> list[Endpoint]:
        return list(self.items)

    def subscribe(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)

    def set(self, items: list[Endpoint]) -> None:
        self.items = items
        for listener in self.listeners:
            listener()


async def reaction(ingress_port: int, endpoints: Endpoints, a: Endpoint, b: Endpoint, rounds: int):
    """(b): b joins -> first answer from b; b leaves -> last answer from b."""
    join: list[float] = []
    leave: list[float] = []
    async with httpx.AsyncClient(timeout=5) as client:
        url = f"http://127.0.0.1:{ingress_port}/"
        headers = {"Host": "web.bench.localhost"}

        async def who() -> str:
            # A reload closes idle keep-alive connections of the old workers; a request
            # that raced that close is sent again, as browsers do for idempotent requests.
            for _ in range(3):
                try:
                    return str((await client.get(url, headers=headers)).json()["name"])
                except httpx.RemoteProtocolError:
                    continue
            raise RuntimeError("three closed connections in a row")

        for _ in range(rounds):
            endpoints.set([a])
            await asyncio.sleep(0.3)
            start = time.perf_counter()
            endpoints.set([a, b])
            while await who() != "b":
                pass
            join.append(time.perf_counter() - start)
            start = time.perf_counter()
            endpoints.set([a])
            last = start
            while time.perf_counter() - last < 0.5:  # no answer from b for 0.5 s: gone
                if await who() == "b":
                    last = time.perf_counter()
            leave.append(last - start)
    return percentiles(join), percentiles(leave)


def haproxy_conf(port: int, upstream: int) -> str:
    return textwrap.dedent(
        f"""
        global
            maxconn 4096
        defaults
            mode http
            timeout connect 5s
            timeout client 60s
            timeout server 60s
            option http-keep-alive
        frontend web
            bind 127.0.0.1:{port}
            default_backend app
        backend app
            http-reuse always
            server a 127.0.0.1:{upstream}
        """
    )


def caddy_conf(port: int, upstream: int) -> str:
    return textwrap.dedent(
        f"""
        {{
            admin off
            auto_https off
        }}
        http://:{port} {{
            bind 127.0.0.1
            reverse_proxy 127.0.0.1:{upstream}
        }}
        """
    )


async def run(seconds: int) -> dict[str, object]:
    results: dict[str, object] = {"wrk": f"-t2 -c32 -d{seconds}s", "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="socle-bench-ingress-") as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        argv_a, port_a, env_a = backend(tmp, "a")
        argv_b, port_b, env_b = backend(tmp, "b")
        with process(argv_a, port_a, env_a), process(argv_b, port_b, env_b):
            endpoints = Endpoints()
            a = Endpoint("web", "web-a", "127.0.0.1", {"http": port_a}, "bench")
            b = Endpoint("web", "web-b", "127.0.0.1", {"http": port_b}, "bench")
            endpoints.set([a])
            prefix = tmp / "ingress"
            temp = tmp / "nginx-tmp"
            listen = Listen(
                http=("127.0.0.1", free_port()),
                https=("127.0.0.1", free_port()),
                prefix=prefix,
                temp=temp,
                user=worker_user(),
            )
            routes: dict[str, Route] = {}
            ingress = Ingress(
                Nginx(prefix, temp=temp),
                listen,
                endpoints,
                routes=lambda: routes,
                apps=lambda: [AppPorts("web", "bench", ("http",))],
            )
            await ingress.start()
            try:
                direct = wrk(f"http://127.0.0.1:{port_a}/", seconds)
                through = wrk(
                    f"http://127.0.0.1:{listen.http[1]}/", seconds, host="web.bench.localhost"
                )
                results["direct"] = direct
                results["ingress_nginx"] = through
                results["p50_overhead_pct"] = round(
                    (through["p50_ms"] / direct["p50_ms"] - 1) * 100, 1
                )
                results["rps_ratio_ingress_vs_direct"] = round(through["rps"] / direct["rps"], 3)
                # One connection: the latency a request gains, without 2 cores shared by
                # wrk, the app and the proxy at saturation.
                one = wrk(f"http://127.0.0.1:{port_a}/", seconds, connections=1)
                one_through = wrk(
                    f"http://127.0.0.1:{listen.http[1]}/",
                    seconds,
                    host="web.bench.localhost",
                    connections=1,
                )
                results["direct_1conn"] = one
                results["ingress_nginx_1conn"] = one_through
                results["p50_overhead_pct_1conn"] = round(
                    (one_through["p50_ms"] / one["p50_ms"] - 1) * 100, 1
                )
                hp = free_port()
                (tmp / "haproxy.cfg").write_text(haproxy_conf(hp, port_a))
                if shutil.which("haproxy"):
                    with process(["haproxy", "-f", str(tmp / "haproxy.cfg"), "-db"], hp):
                        results["haproxy"] = wrk(f"http://127.0.0.1:{hp}/", seconds)
                cp = free_port()
                (tmp / "Caddyfile").write_text(caddy_conf(cp, port_a))
                if shutil.which("caddy"):
                    with process(
                        [
                            "caddy",
                            "run",
                            "--config",
                            str(tmp / "Caddyfile"),
                            "--adapter",
                            "caddyfile",
                        ],
                        cp,
                        {"HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)},
                    ):
                        results["caddy"] = wrk(f"http://127.0.0.1:{cp}/", seconds)
                for peer in ("haproxy", "caddy"):
                    if peer in results:
                        other = results[peer]
                        assert isinstance(other, dict)
                        results[f"rps_ratio_ingress_vs_{peer}"] = round(
                            through["rps"] / other["rps"], 3
                        )
                        results[f"p50_ratio_ingress_vs_{peer}"] = round(
                            through["p50_ms"] / other["p50_ms"], 3
                        )
                join, leave = await reaction(listen.http[1], endpoints, a, b, rounds=8)
                results["healthy_to_traffic_s"] = join
                results["gone_to_no_traffic_s"] = leave
                results["nginx_reloads"] = ingress.reloads
            finally:
                await ingress.stop(stop_nginx=True)
    return results


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    sys.path.insert(0, str(ROOT / "src"))
    print(json.dumps(asyncio.run(run(seconds)), indent=2))


if __name__ == "__main__":
    main()
