"""The nginx renderer as text: shape, prefix semantics, quoting, hostile values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from socle.network.ingress.render import (
    Listen,
    RenderError,
    RouteConf,
    Server,
    TlsFiles,
    quote,
    render,
)

LISTEN = Listen(prefix=Path("/h/ingress"), temp=Path("/h/ingress/tmp"))
S1 = Server("127.0.0.1", 4001)
S2 = Server("127.0.0.1", 4002)


def block(text: str, opener: str) -> str:
    """The text of the block that starts at ``opener`` (up to its closing brace)."""
    start = text.index(opener)
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start : index + 1]
    raise AssertionError("unbalanced")


def test_deterministic_and_balanced() -> None:
    routes = [RouteConf("b", "b.test", servers=(S2,)), RouteConf("a", "a.test", servers=(S1,))]
    text = render(routes, LISTEN)
    assert text == render(list(reversed(routes)), LISTEN)
    assert text.count("{") == text.count("}")
    default = block(text, "    server {\n        listen 127.0.0.1:8080 default_server;")
    assert "return 404;" in default and "proxy_pass" not in default
    assert 'server_name "a.test";' in text and "server 127.0.0.1:4001 max_fails=0;" in text
    assert "proxy_next_upstream error timeout http_502 http_503;" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text  # a forged one is dropped
    assert "user " not in text


def test_prefix_matches_the_path_and_below_only() -> None:
    text = render([RouteConf("api", "a.test", "/api", servers=(S1,), rewrite="/v2")], LISTEN)
    server = text[text.index('server_name "a.test"') :]
    assert 'location = "/api" {' in server and 'location ^~ "/api/" {' in server
    exact = block(server, 'location = "/api"')
    below = block(server, 'location ^~ "/api/"')
    assert "/v2;" in exact and "/v2/;" in below
    assert "location / {\n            return 404;" in server  # nothing else on that host


def test_no_healthy_upstream_answers_503_without_an_upstream_block() -> None:
    text = render([RouteConf("api", "a.test", servers=())], LISTEN)
    assert "\n    upstream " not in text and "return 503;" in text


@pytest.mark.parametrize(
    ("method", "line"),
    [
        ("round_robin", None),
        ("least_conn", "least_conn;"),
        ("hash", "hash $remote_addr consistent;"),
    ],
)
def test_load_balancing(method: str, line: str | None) -> None:
    text = render([RouteConf("api", "a.test", servers=(S1, S2), load_balancing=method)], LISTEN)
    upstream = block(text, "upstream u_api_")
    if line:
        assert line in upstream
    assert upstream.count("server ") == 2


def test_options_render_as_directives() -> None:
    conf = RouteConf(
        "api",
        "a.test",
        servers=(S1,),
        headers=(("X-Note", "a; b } c"),),
        max_body_size=1024,
        rate_limit=(5, 10),
        htpasswd=Path("/h/ingress/auth/api.htpasswd"),
        compression=False,
        connect_timeout=2,
        read_timeout=0.5,
    )
    text = render([conf], LISTEN)
    assert 'add_header X-Note "a; b } c" always;' in text
    assert "add_header X-Content-Type-Options" in text and "Strict-Transport" not in text
    assert "client_max_body_size 1024;" in text and "gzip off;" in text
    assert f"zone=rl_{conf.ident}:1m rate=5r/s;" in text
    assert f"limit_req zone=rl_{conf.ident} burst=10 nodelay;" in text
    assert 'auth_basic_user_file "/h/ingress/auth/api.htpasswd";' in text
    no_burst = RouteConf("n", "n.test", servers=(S1,), rate_limit=(5, 0))
    assert f"limit_req zone=rl_{no_burst.ident};" in render([no_burst], LISTEN)
    assert "proxy_connect_timeout 2000ms;" in text and "proxy_read_timeout 500ms;" in text


def test_tls_route_has_hsts_and_a_plain_http_redirect() -> None:
    tls = TlsFiles(Path("/h/c.pem"), Path("/h/k.pem"))
    text = render([RouteConf("web", "a.test", servers=(S1,), tls=tls)], LISTEN)
    secure = block(text, "listen 127.0.0.1:8443 ssl;")
    assert 'ssl_certificate "/h/c.pem";' in secure
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in secure
    assert "return 308 https://$host:8443$request_uri;" in text
    no_redirect = render(
        [RouteConf("web", "a.test", servers=(S1,), tls=tls, https_redirect=False)], LISTEN
    )
    assert "return 308" not in no_redirect
    default = block(text, "    server {\n        listen 127.0.0.1:8443 ssl default_server;")
    assert "ssl_reject_handshake on;" in default and "ssl_certificate" not in default


def test_redirect_route() -> None:
    text = render([RouteConf("old", "o.test", redirect=(301, "https://n.test/"))], LISTEN)
    assert 'return 301 "https://n.test/";' in text and "proxy_pass" not in text


@pytest.mark.parametrize("value", ["$host", 'a"b', "a\\b", "a\nb", "a\x00"])
def test_quote_refuses_what_it_cannot_neutralise(value: str) -> None:
    with pytest.raises(RenderError):
        quote(value)
    with pytest.raises(RenderError):
        render([RouteConf("x", "a.test", servers=(S1,), headers=(("X-A", value),))], LISTEN)


def test_hostile_values_that_bypass_the_model_are_still_refused() -> None:
    for conf in [
        RouteConf("x", "a.test", servers=(S1,), headers=(("X-A;add_header", "v"),)),
        RouteConf("x", "a.test", servers=(S1,), rewrite="/a;return 200"),
        RouteConf("x", "a.test", servers=(Server("1.2.3.4;", 80),)),
        RouteConf("x", "a.test", redirect=(301, "https://x/$uri")),
        RouteConf("x", "a.test", servers=(S1,), load_balancing="ip_hash; evil"),
    ]:
        with pytest.raises(RenderError):
            render([conf], LISTEN)


def test_worker_user_and_temp_paths() -> None:
    listen = Listen(prefix=Path("/h/ingress"), temp=Path("/run/x"), user="nobody nogroup")
    text = render([], listen)
    assert text.startswith("# Rendered by Socle") and "user nobody nogroup;" in text
    assert 'client_body_temp_path "/run/x/body";' in text


def test_acme_challenges_on_every_plain_host_and_serial_reloads() -> None:
    listen = Listen(prefix=Path("/h/ingress"), temp=Path("/run/x"), acme_root=Path("/run/x/acme"))
    tls = TlsFiles(Path("/h/c.pem"), Path("/h/k.pem"), serial="0a1b")
    text = render(
        [
            RouteConf("web", "a.test", servers=(S1,), tls=tls),
            RouteConf("p", "b.test", servers=(S1,)),
        ],
        listen,
    )
    # The default server, the plain host and the HTTPS redirect of the TLS host all answer.
    assert text.count('location ^~ "/.well-known/acme-challenge/"') == 3
    assert 'root "/run/x/acme";' in text and "# certificate serial 0a1b" in text
    renewed = TlsFiles(tls.cert, tls.key, serial="0c2d")
    assert render([RouteConf("web", "a.test", servers=(S1,), tls=renewed)], listen) != render(
        [RouteConf("web", "a.test", servers=(S1,), tls=tls)], listen
    )
    with pytest.raises(RenderError):
        render(
            [RouteConf("web", "a.test", servers=(S1,), tls=TlsFiles(tls.cert, tls.key, "x;"))],
            listen,
        )
