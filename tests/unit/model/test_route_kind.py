"""The Route kind: strict values (nothing a manifest says may become an nginx directive)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from socle.model.route import Route


def make(**spec: Any) -> Route:
    spec.setdefault("host", "shop.example.test")
    if "redirect" not in spec:
        spec.setdefault("target", {"app": "api", "port": "http"})
    return Route.model_validate(
        {"apiVersion": "socle/v1", "kind": "Route", "metadata": {"name": "r"}, "spec": spec}
    )


def test_defaults_and_full_spec() -> None:
    route = make()
    assert route.spec.path == "/" and route.spec.security_headers and route.spec.compression
    assert route.spec.load_balancing == "round_robin" and route.spec.timeouts.read == 60
    full = make(
        path="/api",
        rewrite="/",
        tls={"issuer": "pki/issue/web"},
        headers={"X-Frame-Options": "DENY", "X-Note": "a; b } c"},
        maxBodySize="10Mi",
        rateLimit={"requestsPerSecond": 5, "burst": 10},
        basicAuth={"secret": "secret/data/users"},
        timeouts={"connect": "2s", "read": "30s"},
        loadBalancing="hash",
    )
    assert full.spec.max_body_size == 10 * 1024 * 1024
    assert full.spec.rate_limit is not None and full.spec.rate_limit.burst == 10
    assert full.spec.headers["X-Note"] == "a; b } c"


@pytest.mark.parametrize(
    ("spec", "word"),
    [
        ({"host": "a.test;"}, "invalid host"),
        ({"host": "a.test\nserver_name x"}, "invalid host"),
        ({"host": "A.TEST"}, "invalid host"),
        ({"host": "a.test}"}, "invalid host"),
        ({"path": "api"}, "invalid path"),
        ({"path": "/a b"}, "invalid path"),
        ({"path": "/a;b"}, "invalid path"),
        ({"path": "/a{b}"}, "invalid path"),
        ({"path": "/$uri"}, "invalid path"),
        ({"path": "/a/../b"}, "invalid path"),
        ({"path": '/a"b'}, "invalid path"),
        ({"rewrite": "/x;return 200"}, "invalid path"),
        ({"path": "/.well-known/acme-challenge"}, "answered by the ingress"),
        ({"path": "/a%2eb"}, "no %-escapes"),
        ({"path": "/%2e%2e/admin"}, "no %-escapes"),
        ({"path": "/.well-known/acme-challenge/tok"}, "answered by the ingress"),
        ({"headers": {"X-A": "$http_cookie"}}, "printable ASCII"),
        ({"headers": {"X-A": 'a"; add_header B "b'}}, "printable ASCII"),
        ({"headers": {"X-A": "a\\"}}, "printable ASCII"),
        ({"headers": {"X-A": "a\r\nSet-Cookie: x"}}, "printable ASCII"),
        ({"headers": {"X A": "a"}}, "invalid header name"),
        ({"headers": {"X-A;": "a"}}, "invalid header name"),
        ({"headers": {"Content-Length": "1"}}, "managed by the ingress"),
        ({"redirect": {"to": "https://x.test/$request_uri"}}, "plain http(s) URL"),
        ({"redirect": {"to": "javascript:alert(1)"}}, "plain http(s) URL"),
        ({"redirect": {"to": 'https://x.test/";'}}, "plain http(s) URL"),
        ({"target": {"app": "api", "port": "Http"}}, "invalid port name"),
        ({"target": {"app": "api", "service": "db", "port": "http"}}, "exactly one"),
        ({"tls": {"issuer": "pki/issue/web", "secret": "kv/x"}}, "exactly one"),
        ({"tls": {"issuer": "pki/sign/web"}}, "PKI issuing path"),
        ({"tls": {"secret": "../sys/x"}}, "invalid secrets path"),
        ({"tls": {"acme": {"directory": "file:///etc/passwd"}}}, "plain http(s) URL"),
        ({"tls": {"acme": {"directory": "http://169.254.169.254/dir"}}}, "must be an https URL"),
        ({"loadBalancing": "random"}, "loadBalancing"),
        ({"rateLimit": {"requestsPerSecond": 0}}, "greater than or equal"),
        ({"timeouts": {"read": "0s"}}, "greater than"),
        ({"listen": "0.0.0.0:80"}, "Extra inputs"),
    ],
)
def test_hostile_values_are_refused(spec: dict[str, Any], word: str) -> None:
    with pytest.raises(ValidationError) as info:
        make(**spec)
    assert word in str(info.value)


def test_redirect_or_target_not_both() -> None:
    with pytest.raises(ValidationError, match=r"exactly one of spec\.target and spec\.redirect"):
        make(redirect={"to": "https://x.test/"}, target={"app": "api", "port": "http"})
    with pytest.raises(ValidationError, match="nothing to rewrite"):
        make(redirect={"to": "https://x.test/"}, rewrite="/")
