"""The ingress service on a real nginx: healthy endpoints only, a bad render never replaces a
working configuration, draining, adoption by a new control plane, hostile values literal."""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from socle.model.route import Route
from socle.network.ingress import AppPorts, Endpoint, Extras, Ingress, IngressError, Listen, Nginx
from socle.network.ingress.nginx import NGINX, worker_user
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")


class Endpoints:
    """An in-memory endpoint source: the tests say which instances are healthy."""

    def __init__(self) -> None:
        self.items: dict[str, Endpoint] = {}
        self._listeners: list[Callable[[], None]] = []

    def endpoints(self) -> list[Endpoint]:
        return list(self.items.values())

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def set(self, *endpoints: Endpoint) -> None:
        self.items = {e.instance: e for e in endpoints}
        for listener in self._listeners:
            listener()


class Backend:
    """A tiny HTTP server that says who it is."""

    def __init__(self, name: str) -> None:
        name_bytes = name.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(name_bytes)))
                self.end_headers()
                self.wfile.write(name_bytes)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def endpoint(self, app: str, instance: str) -> Endpoint:
        return Endpoint(app, instance, "127.0.0.1", {"http": self.port})


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    made = [Backend("one"), Backend("two")]
    yield made
    for backend in made:
        backend.server.shutdown()
        backend.server.server_close()


def route(name: str, **spec: object) -> Route:
    return Route.model_validate(
        {"apiVersion": "socle/v1", "kind": "Route", "metadata": {"name": name}, "spec": spec}
    )


class Harness:
    def __init__(self, home: Path) -> None:
        self.prefix = home / "ingress"
        self.temp = home.parent / f"{home.name}-nginx-tmp"
        self.listen = Listen(
            http=("127.0.0.1", free_port()),
            https=("127.0.0.1", free_port()),
            prefix=self.prefix,
            temp=self.temp,
            user=worker_user(),
        )
        self.endpoints = Endpoints()
        self.routes: dict[str, Route] = {}
        self.apps: list[AppPorts] = []

    def ingress(self, listen: Listen | None = None) -> Ingress:
        return Ingress(
            Nginx(self.prefix, temp=self.temp),
            listen or self.listen,
            self.endpoints,
            routes=lambda: dict(self.routes),
            apps=lambda: list(self.apps),
        )

    def get(self, host: str, path: str = "/") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.listen.http[1]}{path}", headers={"Host": host}, timeout=10
        )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    os.chmod(tmp_path, 0o755)  # pytest's tmp folders are private; nginx's prefix is 0700 anyway
    made = Harness(tmp_path / "home")
    yield made
    Nginx(made.prefix, temp=made.temp).stop()


async def eventually(check: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if await asyncio.to_thread(check):
                return
        except httpx.HTTPError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def test_routes_follow_healthy_endpoints(harness: Harness, backends: list[Backend]) -> None:
    one, two = backends
    harness.apps = [AppPorts("web", "dev", ("http",))]
    harness.routes = {
        "api": route(
            "api",
            host="api.test",
            path="/v1",
            target={"app": "api", "port": "http"},
            headers={"X-Hostile": "a; add_header X-Evil 1; } server { listen 1 }"},
        )
    }
    ingress = harness.ingress()
    await ingress.start()
    try:
        assert harness.get("api.test", "/v1/x").status_code == 503  # nothing healthy yet
        harness.endpoints.set(one.endpoint("api", "api-0"), two.endpoint("web", "web-0"))
        await eventually(lambda: harness.get("api.test", "/v1/x").text == "one")
        answer = harness.get("api.test", "/v1")
        assert answer.headers["x-hostile"] == "a; add_header X-Evil 1; } server { listen 1 }"
        assert "x-evil" not in answer.headers
        assert harness.get("web.dev.localhost").text == "two"  # the default route
        assert ingress.urls() == {
            "api": f"http://api.test:{harness.listen.http[1]}/v1",
            "web": f"http://web.dev.localhost:{harness.listen.http[1]}/",
        }
        # One leaves (failed its health check): it gets no more traffic.
        harness.endpoints.set(two.endpoint("web", "web-0"))
        await eventually(lambda: harness.get("api.test", "/v1/x").status_code == 503)
        view = ingress.view()
        api = next(r for r in view["routes"] if r["name"] == "api")
        assert api["healthy"] == 0 and api["upstreams"] == []
        assert view["nginx"]["pid"] and view["nginx"]["error"] is None
    finally:
        await ingress.stop(stop_nginx=True)


async def test_bad_render_never_replaces_a_working_config(
    harness: Harness, backends: list[Backend]
) -> None:
    harness.endpoints.set(backends[0].endpoint("web", "web-0"))
    harness.apps = [AppPorts("web", "default", ("http",))]
    ingress = harness.ingress()
    await ingress.start()
    conf = harness.prefix / "nginx.conf"
    good = conf.read_text()
    pid = ingress.nginx.pid()
    await ingress.stop(stop_nginx=False)

    bad = dataclasses.replace(harness.listen, extra_http=("no_such_directive on;",))
    broken = harness.ingress(bad)
    await broken.start()  # starts (the control plane must), but says why nothing changed
    try:
        assert broken.error is not None and "no_such_directive" in broken.error
        with pytest.raises(IngressError, match="refused the rendered configuration") as info:
            await broken.sync()
        assert info.value.hint == "the running configuration was kept"
        assert info.value.message == broken.error  # the same fault reads the same (no time)
        assert conf.read_text() == good
        assert broken.nginx.pid() == pid
        assert harness.get("web.default.localhost").text == "one"
    finally:
        await broken.stop(stop_nginx=True)


async def test_drain_takes_an_instance_out_before_it_stops(
    harness: Harness, backends: list[Backend]
) -> None:
    one, two = backends
    harness.apps = [AppPorts("web", "default", ("http",))]
    harness.endpoints.set(one.endpoint("web", "web-0"), two.endpoint("web", "web-1"))
    ingress = harness.ingress()
    await ingress.start()
    try:
        await eventually(
            lambda: {harness.get("web.default.localhost").text for _ in range(6)} == {"one", "two"}
        )
        await ingress.drain("web-0")
        # Right after the drain returns, new requests only reach the other instance.
        assert {harness.get("web.default.localhost").text for _ in range(10)} == {"two"}
        assert ingress.reloads >= 2
    finally:
        await ingress.stop(stop_nginx=True)


async def test_a_new_control_plane_adopts_nginx(harness: Harness, backends: list[Backend]) -> None:
    harness.apps = [AppPorts("web", "default", ("http",))]
    harness.endpoints.set(backends[0].endpoint("web", "web-0"))
    first = harness.ingress()
    await first.start()
    pid = first.nginx.pid()
    await first.stop(stop_nginx=False)
    assert harness.get("web.default.localhost").text == "one"  # nginx outlives it

    second = harness.ingress()
    await second.start()
    try:
        assert second.nginx.pid() == pid
        harness.endpoints.set(backends[1].endpoint("web", "web-1"))
        await eventually(lambda: harness.get("web.default.localhost").text == "two")
        assert second.nginx.pid() == pid  # reloaded, not replaced
    finally:
        await second.stop(stop_nginx=True)
    assert (
        not Path(f"/proc/{pid}").exists()
        or b"nginx" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )


def test_private_files(harness: Harness) -> None:
    nginx = Nginx(harness.prefix, temp=harness.temp)
    nginx.prepare_dirs()
    for path in (harness.prefix, harness.prefix / "logs", harness.temp):
        assert path.stat().st_mode & 0o077 == 0, path
    if os.geteuid() == 0:
        assert harness.temp.stat().st_uid != 0  # the workers' own


async def test_limits_and_compression_on_real_nginx(
    harness: Harness, backends: list[Backend]
) -> None:
    harness.endpoints.set(backends[0].endpoint("api", "api-0"))
    harness.routes = {
        "api": route(
            "api",
            host="api.test",
            target={"app": "api", "port": "http"},
            maxBodySize="1Ki",
            rateLimit={"requestsPerSecond": 1, "burst": 0},
        ),
        "big": route("big", host="big.test", target={"app": "api", "port": "http"}),
    }
    ingress = harness.ingress()
    await ingress.start()
    try:
        url = f"http://127.0.0.1:{harness.listen.http[1]}/"
        big = httpx.post(url, headers={"Host": "big.test"}, content=b"x" * 4096, timeout=10)
        assert big.status_code == 501  # reached the backend (which has no do_POST)
        too_big = httpx.post(url, headers={"Host": "api.test"}, content=b"x" * 4096, timeout=10)
        assert too_big.status_code == 413
        codes = [harness.get("api.test").status_code for _ in range(5)]
        assert codes[0] in (200, 429) and 429 in codes  # 1 r/s per client, no burst
        assert harness.get("big.test").headers["x-frame-options"] == "SAMEORIGIN"
    finally:
        await ingress.stop(stop_nginx=True)


async def test_a_later_route_never_takes_a_claimed_host_or_breaks_nginx(
    harness: Harness, backends: list[Backend]
) -> None:
    """Two Routes on one host and path (two teams, two environments) or a Route on another
    app's default host used to render duplicate locations: nginx refused the whole
    configuration and every route froze. Now the first claim answers, the later one shows
    why it does not."""
    one, two = backends
    evil = Backend("evil")
    try:
        harness.apps = [
            AppPorts("web", "dev", ("http",)),
            AppPorts("api--prod", "prod", ("http",)),
        ]
        harness.routes = {
            "shop": route("shop", host="shop.test", target={"app": "shop", "port": "http"}),
            "steal": route(
                "steal", host="shop.test", path="/", target={"app": "evil", "port": "http"}
            ),
            "hijack": route(
                "hijack", host="web.dev.localhost", target={"app": "evil", "port": "http"}
            ),
        }
        harness.endpoints.set(
            one.endpoint("shop", "shop-0"),
            two.endpoint("web", "web-0"),
            evil.endpoint("evil", "evil-0"),
            two.endpoint("api--prod", "api-0"),
        )
        ingress = harness.ingress()
        await ingress.start()
        try:
            assert ingress.error is None
            assert harness.get("shop.test").text == "one"
            assert harness.get("web.dev.localhost").text == "two"
            # A second environment's copy answers on its declared name (APP.ENV.localhost).
            assert harness.get("api.prod.localhost").text == "two"
            rows = {r["name"]: r for r in ingress.view()["routes"]}
            assert "already routed by Route/shop" in rows["steal"]["error"]
            assert "default host of app web" in rows["hijack"]["error"]
            assert rows["shop"]["error"] is None
        finally:
            await ingress.stop(stop_nginx=True)
    finally:
        evil.server.shutdown()
        evil.server.server_close()


async def test_an_unknown_sni_name_gets_no_certificate(
    harness: Harness, backends: list[Backend], tmp_path: Path
) -> None:
    """The default HTTPS server used to answer any name with the first TLS host's
    certificate (telling scanners which hosts the teams serve); it now refuses the
    handshake, while the route's own name still gets its certificate."""
    import ssl

    from socle.network.ingress import Extras
    from socle.network.ingress.render import TlsFiles
    from tests.support.certs import write_self_signed

    files = TlsFiles(tmp_path / "shop.crt", tmp_path / "shop.key")
    write_self_signed(files.cert, files.key, "secret-shop.test")

    async def extras(route: Route) -> Extras:
        return Extras(tls=files)

    harness.routes = {
        "shop": route(
            "shop",
            host="secret-shop.test",
            target={"app": "shop", "port": "http"},
            tls={"secret": "kv/shop"},
        )
    }
    harness.endpoints.set(backends[0].endpoint("shop", "shop-0"))
    ingress = Ingress(
        Nginx(harness.prefix, temp=harness.temp),
        harness.listen,
        harness.endpoints,
        routes=lambda: dict(harness.routes),
        apps=lambda: [],
        extras=extras,
    )
    await ingress.start()
    try:
        assert ingress.error is None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        def peer(sni: str | None) -> bytes | None:
            port = harness.listen.https[1]
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=sni) as tls,
            ):
                return tls.getpeercert(binary_form=True)

        served = await asyncio.to_thread(peer, "secret-shop.test")
        assert served == ssl.PEM_cert_to_DER_cert(files.cert.read_text())
        for sni in ("scanner.test", None):
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(peer, sni)
    finally:
        await ingress.stop(stop_nginx=True)


async def test_the_longest_host_a_route_may_hold_is_served(
    harness: Harness, backends: list[Backend]
) -> None:
    """A 253-character host (valid DNS, valid Route) made nginx refuse the whole
    configuration (server_names_hash_bucket_size): one team froze every route."""
    host = ".".join(["a" * 63] * 3) + "." + "b" * 61
    harness.routes = {"long": route("long", host=host, target={"app": "long", "port": "http"})}
    harness.endpoints.set(backends[0].endpoint("long", "long-0"))
    ingress = harness.ingress()
    await ingress.start()
    try:
        assert ingress.error is None
        assert harness.get(host).text == "one"
    finally:
        await ingress.stop(stop_nginx=True)


async def test_check_names_the_route_nginx_refuses(
    harness: Harness, backends: list[Backend]
) -> None:
    """``check`` runs ``nginx -t`` on the candidates in a scratch prefix: the route nginx
    refuses is named with nginx's reason; the running configuration is untouched."""
    ingress = harness.ingress()
    harness.endpoints.set(backends[0].endpoint("one", "one-1"))
    harness.routes = {"ok": route("ok", host="ok.test", target={"app": "one", "port": "http"})}
    await ingress.start()
    try:
        live = harness.prefix.joinpath("nginx.conf").read_text()
        # The model refuses every value known to break nginx (the 253-character host that
        # once did is served now), so the candidate nginx refuses is made past the model:
        # a body limit nginx cannot parse, as a future gap in the model would let through.
        big = route("big", host="big.test", target={"app": "one", "port": "http"})
        object.__setattr__(big.spec, "max_body_size", 2**70)
        refused = await ingress.check({"ok": harness.routes["ok"], "big": big})
        assert set(refused) == {"big"}
        assert "client_max_body_size" in refused["big"]
        assert await ingress.check({"ok": harness.routes["ok"]}) == {}
        assert harness.prefix.joinpath("nginx.conf").read_text() == live
        assert harness.get("ok.test").text == "one"
    finally:
        await ingress.stop(stop_nginx=True)


async def test_route_state_is_the_ingress_view(harness: Harness, backends: list[Backend]) -> None:
    """``route_state``: serving, no healthy upstream, certificate pending, error."""

    async def extras(r: Route) -> Extras:
        if r.name == "secure":
            return Extras(error="route secure: waiting for the ACME certificate")
        if r.name == "broken":
            return Extras(error="route broken: secret web/auth not found")
        return Extras()

    ingress = Ingress(
        Nginx(harness.prefix, temp=harness.temp),
        harness.listen,
        harness.endpoints,
        routes=lambda: dict(harness.routes),
        apps=lambda: list(harness.apps),
        extras=extras,
    )
    target = {"app": "one", "port": "http"}
    acme = {"acme": {"directory": "https://acme.test/dir"}}
    harness.routes = {
        "shop": route("shop", host="shop.test", target=target),
        "idle": route("idle", host="idle.test", target={"app": "two", "port": "http"}),
        "secure": route("secure", host="secure.test", target=target, tls=acme),
        "broken": route("broken", host="broken.test", target=target),
    }
    harness.endpoints.set(backends[0].endpoint("one", "one-1"))
    assert ingress.route_state("shop")[0] == "pending"
    await ingress.start()
    try:
        await ingress.sync()
        assert ingress.route_state("shop") == ("serving", "1 healthy upstream(s)")
        assert ingress.route_state("idle")[0] == "no_healthy_upstream"
        assert ingress.route_state("secure") == (
            "certificate_pending",
            "route secure: waiting for the ACME certificate",
        )
        assert ingress.route_state("broken")[0] == "error"
        harness.endpoints.set()
        await ingress.sync()
        assert ingress.route_state("shop")[0] == "no_healthy_upstream"
    finally:
        await ingress.stop(stop_nginx=True)
