"""nginx configuration from routes and endpoints: a pure function, tested as text.

:func:`render` turns :class:`RouteConf` values (already validated by the ``Route`` model
or built by Socle for default routes) into one ``nginx.conf``. Two layers keep manifests
from writing directives: the model's strict patterns refuse anything nginx's parser gives a
meaning to, and :func:`quote` double-quotes every free-form value on top (refusing, again,
the characters a quoted string cannot hold safely). Names that become nginx identifiers
(upstream, zone) are derived from validated object names plus a digest, never copied.

Shape of the output::

    events { }
    http {
      upstream u_<id> { least_conn; server 10.0.0.2:4001 max_fails=1 fail_timeout=1s; }
      server { listen 127.0.0.1:8080 default_server; return 404; }   # unknown hosts
      server { listen ...; server_name shop.example.test;
               location ^~ "/api/" { proxy_pass http://u_<id>; ... } }
    }

An upstream without healthy servers is not emitted; its locations answer 503 at once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from socle.model.route import ACME_CHALLENGE_PATH

_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\$]')


class RenderError(ValueError):
    """A value cannot be written into the configuration safely (never for valid routes)."""


def quote(value: str) -> str:
    """``value`` as an nginx double-quoted string; refuses what quoting cannot neutralise
    (control characters, ``"``, ``\\`` and ``$``, which would start a variable)."""
    if _UNSAFE.search(value):
        raise RenderError(f"unsafe characters in {value!r}")
    return f'"{value}"'


@dataclass(frozen=True)
class Server:
    """One upstream server: an instance's address and port."""

    address: str
    port: int

    def spec(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        if not re.fullmatch(r"[0-9A-Fa-f.:\[\]]+|[a-z0-9.-]+", host) or not 0 < self.port < 65536:
            raise RenderError(f"bad upstream address {self.address}:{self.port}")
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    serial: str = ""
    """The certificate's serial: written into the configuration, so that a renewed
    certificate (same paths) changes the text and nginx reloads it."""


@dataclass(frozen=True)
class RouteConf:
    """A route as the renderer needs it (see :class:`socle.model.route.RouteSpec`)."""

    name: str
    host: str
    path: str = "/"
    servers: tuple[Server, ...] = ()
    redirect: tuple[int, str] | None = None
    rewrite: str | None = None
    tls: TlsFiles | None = None
    https_redirect: bool = True
    security_headers: bool = True
    compression: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    max_body_size: int | None = None
    rate_limit: tuple[int, int] | None = None
    """(requests per second, burst) per client address."""
    htpasswd: Path | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    load_balancing: str = "round_robin"

    @property
    def ident(self) -> str:
        """A stable nginx identifier for this route's upstream and zones."""
        digest = hashlib.sha256(f"{self.name}\0{self.host}\0{self.path}".encode()).hexdigest()
        safe = re.sub(r"[^a-z0-9_]", "_", self.name.lower())[:40]
        return f"{safe}_{digest[:10]}"


@dataclass(frozen=True)
class Listen:
    """Where nginx listens, plus the paths it owns."""

    http: tuple[str, int] = ("127.0.0.1", 8080)
    https: tuple[str, int] = ("127.0.0.1", 8443)
    prefix: Path = Path("/nonexistent")
    temp: Path = Path("/nonexistent")
    """Folder the workers may write (request bodies, buffered responses)."""
    user: str | None = None
    """Unprivileged user for the workers when nginx starts as root."""
    acme_root: Path | None = None
    """Folder served under ``/.well-known/acme-challenge/`` on every plain-HTTP host."""
    extra_http: Sequence[str] = field(default_factory=tuple)
    metrics_log: Path | None = None
    """File the per-route access records go to (None: not written), buffered by nginx and
    read by Socle. Each record carries only values Socle wrote or nginx computed (see
    :data:`METRICS_FORMAT`), never the client's host, path or headers."""


METRICS_TAG = "socle1"
"""First word of every per-route access record (its format's version)."""

METRICS_FORMAT = (
    f"{METRICS_TAG} $socle_route $status $request_time $body_bytes_sent $upstream_response_time"
)
"""One access record: route name (set by the route's locations, ``-`` elsewhere), status,
total time, body bytes sent, then the upstream times (``-``, or ``0.002, 0.004`` when nginx
tried several servers): the last field since it may hold spaces."""


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _seconds(value: float) -> str:
    return f"{max(1, round(value * 1000))}ms"


def _locations(path: str) -> list[str]:
    """Prefix semantics: ``/api`` matches ``/api`` and ``/api/...`` (not ``/apix``)."""
    if path == "/":
        return ["location / {"]
    base = path.rstrip("/")
    return [f"location = {quote(base)} {{", f"location ^~ {quote(base + '/')} {{"]


SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
)
HSTS = ("Strict-Transport-Security", "max-age=31536000")


def _route_body(route: RouteConf, *, tls: bool, exact: bool) -> list[str]:
    # The route's name for the access record: a literal from the manifest, never the request.
    out: list[str] = [f"set $socle_route {quote(route.name)};"]
    headers = list(route.headers)
    if route.security_headers:
        headers = list(SECURITY_HEADERS) + headers
        if tls:
            headers.append(HSTS)
    for name, value in headers:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name):
            raise RenderError(f"bad header name {name!r}")
        out.append(f"add_header {name} {quote(value)} always;")
    if route.redirect is not None:
        code, url = route.redirect
        out.append(f"return {int(code)} {quote(url)};")
        return out
    if route.max_body_size is not None:
        out.append(f"client_max_body_size {int(route.max_body_size)};")
    if route.rate_limit is not None:
        burst = int(route.rate_limit[1])
        if burst > 0:  # nginx refuses burst=0: no burst is no burst parameter
            out.append(f"limit_req zone=rl_{route.ident} burst={burst} nodelay;")
        else:
            out.append(f"limit_req zone=rl_{route.ident};")
        out.append("limit_req_status 429;")
    if route.htpasswd is not None:
        out.append(f"auth_basic {quote('socle: ' + route.name)};")
        out.append(f"auth_basic_user_file {quote(str(route.htpasswd))};")
    if not route.compression:
        out.append("gzip off;")
    if not route.servers:
        out.append("return 503;")
        return out
    target = f"http://u_{route.ident}"
    if route.rewrite is not None:
        new = route.rewrite
        if route.path != "/" and exact:
            new = new.rstrip("/") or "/"
        elif route.path != "/" and not new.endswith("/"):
            new += "/"
        target += _plain(new)
    out += [
        f"proxy_pass {target};",
        f"proxy_connect_timeout {_seconds(route.connect_timeout)};",
        f"proxy_read_timeout {_seconds(route.read_timeout)};",
        f"proxy_send_timeout {_seconds(route.send_timeout)};",
    ]
    return out


def _plain(path: str) -> str:
    """A path written unquoted inside ``proxy_pass`` (already limited to safe characters)."""
    if not re.fullmatch(r"/[A-Za-z0-9._~!*+,=:@/%-]*", path):
        raise RenderError(f"bad rewrite path {path!r}")
    return path


def _upstream(route: RouteConf) -> list[str]:
    if not route.servers or route.redirect is not None:
        return []
    out = [f"upstream u_{route.ident} {{"]
    if route.load_balancing == "least_conn":
        out.append("    least_conn;")
    elif route.load_balancing == "hash":
        out.append("    hash $remote_addr consistent;")
    elif route.load_balancing != "round_robin":
        raise RenderError(f"unknown load balancing {route.load_balancing!r}")
    for server in sorted(set(route.servers), key=lambda s: (s.address, s.port)):
        out.append(f"    server {server.spec()} max_fails=0;")
    out += ["    keepalive 16;", "}"]
    return out


def _server(
    host: str, routes: list[RouteConf], listen: Listen, *, tls: TlsFiles | None
) -> list[str]:
    lines = ["server {"]
    if tls is not None:
        lines.append(f"    listen {_addr(*listen.https)} ssl;")
        lines.append(f"    ssl_certificate {quote(str(tls.cert))};")
        lines.append(f"    ssl_certificate_key {quote(str(tls.key))};")
        if tls.serial:
            if not re.fullmatch(r"[0-9a-f]{1,64}", tls.serial):
                raise RenderError(f"bad certificate serial {tls.serial!r}")
            lines.append(f"    # certificate serial {tls.serial}")
    else:
        lines.append(f"    listen {_addr(*listen.http)};")
    lines.append(f"    server_name {quote(host)};")
    if tls is None:
        lines += _acme(listen)
    for route in sorted(routes, key=lambda r: (-len(r.path), r.path)):
        for opener in _locations(route.path):
            exact = opener.startswith("location =")
            lines.append(f"    {opener}")
            body = _route_body(route, tls=tls is not None, exact=exact)
            lines += [f"        {line}" for line in body]
            lines.append("    }")
    if not any(r.path == "/" for r in routes):
        lines += ["    location / {", "        return 404;", "    }"]
    lines.append("}")
    return lines


def _acme(listen: Listen) -> list[str]:
    """HTTP-01 challenge answers (files the ACME client writes), on every plain-HTTP host."""
    if listen.acme_root is None:
        return []
    return [
        f"    location ^~ {quote(ACME_CHALLENGE_PATH)} {{",
        f"        root {quote(str(listen.acme_root))};",
        "        default_type text/plain;",
        "    }",
    ]


def _redirect_server(host: str, routes: list[RouteConf], listen: Listen) -> list[str]:
    """Plain HTTP for a TLS host: redirect to HTTPS (ACME challenges still answered)."""
    lines = ["server {", f"    listen {_addr(*listen.http)};", f"    server_name {quote(host)};"]
    lines += _acme(listen)
    port = listen.https[1]
    suffix = "" if port == 443 else f":{port}"
    lines += [
        "    location / {",
        f"        return 308 https://$host{suffix}$request_uri;",
        "    }",
        "}",
    ]
    del routes
    return lines


def _metrics_log(listen: Listen) -> list[str]:
    """Per-route access records, buffered (one write per 64 KiB or per second, not one per
    request), in a file the master opens: the workers need no access to anything of Socle."""
    if listen.metrics_log is None:
        return []
    return [
        '    map $host $socle_route { default "-"; }',
        f'    log_format socle_metrics "{METRICS_FORMAT}";',  # a constant: no quote()
        f"    access_log {quote(str(listen.metrics_log))} socle_metrics buffer=64k flush=1s;",
    ]


def render(routes: Iterable[RouteConf], listen: Listen) -> str:
    """The whole ``nginx.conf`` for ``routes`` (deterministic: equal input, equal text)."""
    routes = sorted(routes, key=lambda r: (r.host, r.path, r.name))
    by_host: dict[str, list[RouteConf]] = {}
    for route in routes:
        by_host.setdefault(route.host, []).append(route)
    temp = listen.temp
    lines = [
        "# Rendered by Socle: edits are overwritten.",
        *([f"user {listen.user};"] if listen.user else []),
        "worker_processes auto;",
        f"pid {quote(str(listen.prefix / 'nginx.pid'))};",
        f"error_log {quote(str(listen.prefix / 'logs' / 'error.log'))} warn;",
        "worker_shutdown_timeout 30s;",
        "events { worker_connections 4096; }",
        "http {",
        "    default_type application/octet-stream;",
        "    server_tokens off;",
        f"    access_log {quote(str(listen.prefix / 'logs' / 'access.log'))} combined buffer=64k flush=1s;",
        f"    client_body_temp_path {quote(str(temp / 'body'))};",
        f"    proxy_temp_path {quote(str(temp / 'proxy'))};",
        f"    fastcgi_temp_path {quote(str(temp / 'fastcgi'))};",
        f"    uwsgi_temp_path {quote(str(temp / 'uwsgi'))};",
        f"    scgi_temp_path {quote(str(temp / 'scgi'))};",
        # Room for the longest name a Route may hold (253 characters): with less, one
        # long host makes nginx refuse the whole configuration, every team's routes.
        "    server_names_hash_bucket_size 512;",
        "    server_names_hash_max_size 8192;",
        "    gzip on;",
        "    gzip_proxied any;",
        "    gzip_min_length 1024;",
        "    gzip_types text/plain text/css application/json application/javascript "
        "text/xml application/xml image/svg+xml;",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        # The ingress is the edge: what a client sent in X-Forwarded-For is replaced, not
        # extended (an app reading the first address would trust a forged one).
        "    proxy_set_header X-Forwarded-For $remote_addr;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $host;",
        # Idempotent requests go to the next upstream when one fails (connection refused or
        # reset by an instance that stopped); non-idempotent ones are never retried.
        "    proxy_next_upstream error timeout http_502 http_503;",
        "    proxy_next_upstream_tries 3;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        *[f"    {line}" for line in listen.extra_http],
        *_metrics_log(listen),
    ]
    for route in routes:
        if route.rate_limit is not None and route.redirect is None:
            rate = int(route.rate_limit[0])
            lines.append(
                f"    limit_req_zone $binary_remote_addr zone=rl_{route.ident}:1m rate={rate}r/s;"
            )
    for route in routes:
        lines += [f"    {line}" for line in _upstream(route)]
    lines += ["    server {", f"        listen {_addr(*listen.http)} default_server;"]
    lines += [f"    {line}" for line in _acme(listen)]
    lines += ["        location / {", "            return 404;", "        }", "    }"]
    tls_hosts = {r.host: r.tls for r in routes if r.tls is not None}
    if tls_hosts:
        # An unknown (or missing) SNI name gets no certificate at all: answering it with
        # one host's certificate would tell any scanner the names another team serves.
        lines += [
            "    server {",
            f"        listen {_addr(*listen.https)} ssl default_server;",
            "        ssl_reject_handshake on;",
            "        return 404;",
            "    }",
        ]
    for host, host_routes in by_host.items():
        tls = tls_hosts.get(host)
        plain = [r for r in host_routes if r.tls is None]
        secure = [r for r in host_routes if r.tls is not None]
        if secure and tls is not None:
            lines += [f"    {line}" for line in _server(host, secure, listen, tls=tls)]
            if any(r.https_redirect for r in secure) and not plain:
                lines += [f"    {line}" for line in _redirect_server(host, secure, listen)]
        if plain:
            lines += [f"    {line}" for line in _server(host, plain, listen, tls=None)]
    lines.append("}")
    return "\n".join(lines) + "\n"
