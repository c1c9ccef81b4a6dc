"""The ``Route`` kind: how users reach an app (or an ExternalService) through the ingress.

A Route maps ``host`` + ``path`` (a prefix) to a target's named port, or redirects. Every
value here ends up in the nginx configuration Socle renders, so every value is hostile
input: hosts, paths, header names and values and URLs are checked against strict patterns
(no ``$`` variables, quotes, backslashes, braces where they are not literal, control
characters), and the renderer quotes what it writes on top of that. A manifest can only
ever say what these fields mean, never add a directive.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from socle.model.app import NAME_RE, PORT_NAME_RE, FieldError, Metadata, Spec
from socle.units import Duration, Size

HOST_RE = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
"""A DNS name in lowercase, optionally a leading ``*.`` wildcard."""
PATH_RE = re.compile(r"^/([A-Za-z0-9._~!*+,=:@/-]|%[0-9A-Fa-f]{2}){0,1023}$")
"""A URL path prefix: unreserved characters, a few sub-delims and %-escapes only (no ``;``,
``{``, ``}``, ``$``, quotes, spaces: nothing nginx's parser gives a meaning to)."""
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
HEADER_VALUE_RE = re.compile(r"^[\x20-\x21\x23\x25-\x5b\x5d-\x7e]{0,1024}$")
"""Printable ASCII without ``"``, ``$`` and ``\\`` (the renderer double-quotes the value, so
``;`` and ``}`` stay literal; ``$`` would be an nginx variable, and has no escape)."""
URL_RE = re.compile(
    r"^https?://[A-Za-z0-9.:\[\]-]+(/([A-Za-z0-9._~!*+,=:@/?&-]|%[0-9A-Fa-f]{2})*)?$"
)
"""An absolute http(s) URL made of safe characters only (redirect targets)."""
ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/"
"""Served by the ingress on every plain-HTTP host: a Route there would make nginx refuse
the whole configuration (a duplicate location), every team's routes with it."""
SECRET_PATH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$")

RESERVED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "host", "upgrade", "keep-alive"}
)
MAX_HEADERS = 32

LoadBalancing = Literal["round_robin", "least_conn", "hash"]


def check_header_value(name: str, value: str) -> str:
    if not HEADER_VALUE_RE.fullmatch(value):
        raise ValueError(
            f"header {name!r}: value must be printable ASCII without '$', '\"' or '\\' "
            "(and no newlines)"
        )
    return value


class RouteTarget(Spec):
    app: str | None = None
    """The App to route to."""
    service: str | None = None
    """Or the ExternalService to route to."""
    port: str
    """Name of the target's port (``spec.ports[].name``)."""

    @field_validator("app", "service")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.fullmatch(value):
            raise ValueError(f"invalid name {value!r}")
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: str) -> str:
        if not PORT_NAME_RE.fullmatch(value):
            raise ValueError(f"invalid port name {value!r}")
        return value

    @model_validator(mode="after")
    def _one(self) -> RouteTarget:
        if (self.app is None) == (self.service is None):
            raise ValueError("set exactly one of target.app and target.service")
        return self

    @property
    def name(self) -> str:
        return self.app or self.service or ""


class AcmeSpec(Spec):
    directory: str
    """The ACME directory URL (Let's Encrypt, or any ACME server)."""
    email: str | None = None

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        if not URL_RE.fullmatch(value):
            raise ValueError(f"directory {value!r} is not a plain http(s) URL")
        if not value.startswith("https://"):
            # The control plane fetches this URL and posts to the ones it lists: plain
            # http would let a manifest aim it at metadata services and loopback APIs
            # (and expose the orders on the wire).
            raise ValueError(f"directory {value!r} must be an https URL")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}", value
        ):
            raise ValueError(f"invalid email {value!r}")
        return value


class TlsSpec(Spec):
    issuer: str | None = None
    """A PKI issuing path of the secrets engine, e.g. ``pki/issue/web`` (role ``web``)."""
    acme: AcmeSpec | None = None
    secret: str | None = None
    """A KV path holding ``certificate`` and ``private_key`` (PEM)."""

    @field_validator("issuer", "secret")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not SECRET_PATH_RE.fullmatch(value) or ".." in value):
            raise ValueError(f"invalid secrets path {value!r}")
        return value

    @model_validator(mode="after")
    def _one(self) -> TlsSpec:
        if sum(x is not None for x in (self.issuer, self.acme, self.secret)) != 1:
            raise ValueError("set exactly one of tls.issuer, tls.acme and tls.secret")
        if self.issuer is not None and "/issue/" not in self.issuer:
            raise FieldError(("issuer",), "issuer must be a PKI issuing path like pki/issue/ROLE")
        return self


class RedirectSpec(Spec):
    to: str
    """Absolute URL to redirect to."""
    code: Literal[301, 302, 307, 308] = 302

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        if not URL_RE.fullmatch(value):
            raise ValueError(f"redirect target {value!r} must be a plain http(s) URL")
        return value


class RateLimitSpec(Spec):
    requests_per_second: int = Field(ge=1, le=100_000)
    burst: int = Field(default=0, ge=0, le=100_000)


class BasicAuthSpec(Spec):
    secret: str
    """A KV path whose keys are user names and values their passwords."""

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if not SECRET_PATH_RE.fullmatch(value) or ".." in value:
            raise ValueError(f"invalid secrets path {value!r}")
        return value


class TimeoutsSpec(Spec):
    connect: Duration = Field(default=5.0, gt=0, le=75)
    read: Duration = Field(default=60.0, gt=0, le=3600)
    send: Duration = Field(default=60.0, gt=0, le=3600)


class RouteSpec(Spec):
    host: str
    path: str = "/"
    """Path prefix: ``/api`` matches ``/api`` and ``/api/...``, not ``/apix``."""
    target: RouteTarget | None = None
    redirect: RedirectSpec | None = None
    rewrite: str | None = None
    """Replace the matched prefix with this path before proxying (``/api`` -> ``/``)."""
    tls: TlsSpec | None = None
    https_redirect: bool = True
    """On a TLS route, answer plain HTTP with a redirect to HTTPS."""
    security_headers: bool = True
    """X-Content-Type-Options, X-Frame-Options, Referrer-Policy (and HSTS on TLS routes)."""
    compression: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra response headers."""
    max_body_size: Size | None = None
    rate_limit: RateLimitSpec | None = None
    basic_auth: BasicAuthSpec | None = None
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)
    load_balancing: LoadBalancing = "round_robin"
    """``round_robin``, ``least_conn`` or ``hash`` (consistent, by client address)."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if len(value) > 253 or not HOST_RE.fullmatch(value):
            raise ValueError(
                f"invalid host {value!r}: a lowercase DNS name (letters, digits, '-', '.'), "
                "optionally starting with '*.'"
            )
        return value

    @field_validator("path", "rewrite")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not PATH_RE.fullmatch(value) or "//" in value):
            raise ValueError(
                f"invalid path {value!r}: starts with '/', then letters, digits and "
                "-._~!*+,=:@/ or %XX escapes only"
            )
        if value is not None and any(seg in (".", "..") for seg in value.split("/")):
            raise ValueError(f"invalid path {value!r}: no '.' or '..' segments")
        return value

    @field_validator("path")
    @classmethod
    def _not_acme(cls, value: str) -> str:
        if "%" in value:
            # nginx matches locations against the decoded path: "/a%2eb" would match
            # requests for "/a%252eb" only, never "/a.b".
            raise ValueError(
                f"invalid path {value!r}: no %-escapes (requests are matched decoded; "
                "write the characters themselves)"
            )
        if (value.rstrip("/") + "/").startswith(ACME_CHALLENGE_PATH):
            raise ValueError(
                f"path {value!r}: {ACME_CHALLENGE_PATH} is answered by the ingress itself "
                "(ACME HTTP-01 challenges)"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} extra headers")
        for name, val in value.items():
            if not HEADER_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}: letters, digits and '-' only")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is managed by the ingress")
            check_header_value(name, val)
        return value

    @model_validator(mode="after")
    def _shape(self) -> RouteSpec:
        if (self.target is None) == (self.redirect is None):
            raise ValueError("set exactly one of spec.target and spec.redirect")
        if self.redirect is not None and self.rewrite is not None:
            raise FieldError(("rewrite",), "a redirect route has nothing to rewrite")
        return self


class Route(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["Route"]
    metadata: Metadata
    spec: RouteSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def route_references(route: Route) -> list[Any]:
    """A Route needs its target (App or ExternalService) and its basic-auth secret is read
    at render time (no object reference)."""
    from socle.model.kinds import Reference

    target = route.spec.target
    if target is None:
        return []
    if target.app is not None:
        return [Reference(("spec", "target", "app"), "App", target.app, "target")]
    return [Reference(("spec", "target", "service"), "ExternalService", target.name, "target")]
