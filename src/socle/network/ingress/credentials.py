"""What routes need from the secrets engine: certificates and basic-auth users, as files.

The ingress asks the secrets engine with the ACL policy ``ingress`` only (deny by default:
the operator grants it ``update`` on a PKI issuing path, ``read`` on KV paths), like apps
read their secrets with ``app-<name>``:

- ``tls.issuer: pki/issue/ROLE``: a certificate for the route's host is issued, kept under
  ``ingress/certs/`` (key owner-only) and issued again once two thirds of its lifetime
  passed (checked at every render; the ingress re-renders at least every few seconds);
- ``tls.secret: PATH``: ``certificate`` and ``private_key`` (PEM) read from KV;
- ``basicAuth.secret: PATH``: KV keys are user names, values their passwords, written as an
  htpasswd file of salted SHA-1 (``{SSHA}``, a scheme nginx reads) in a folder outside
  SOCLE_HOME that the workers read on each request (as root: owned by root, readable by
  the workers' group only, so neither a worker nor any other process of the worker user
  can replace a file and let itself in).
- ``tls.acme``: see :mod:`socle.network.ingress.acme`.

Nothing read here is logged; errors name the route and the path, never a value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from socle.errors import SocleError
from socle.fs import private_dir, write_private
from socle.model.route import Route
from socle.network.ingress.render import TlsFiles
from socle.network.ingress.service import Extras

POLICY = "ingress"
"""The ACL policy the ingress reads and issues with."""
CERT_TTL = "720h"
RECHECK_SECONDS = 30.0
"""How often a failed lookup (sealed engine, missing grant) is tried again."""


class SecretsCaller(Protocol):
    async def call_as(
        self, policies: list[str], operation: str, path: str, data: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...


@dataclass
class _Cert:
    files: TlsFiles
    not_before: float
    not_after: float
    info: dict[str, Any]
    source: tuple[str, str]
    """(kind, path/host): a route that changes its source gets a new certificate."""

    def due(self, now: float) -> bool:
        return now >= self.not_before + (self.not_after - self.not_before) * 2 / 3


def describe(pem: bytes) -> tuple[float, float, dict[str, Any]]:
    cert = x509.load_pem_x509_certificate(pem)
    not_before = cert.not_valid_before_utc.timestamp()
    not_after = cert.not_valid_after_utc.timestamp()
    info = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
    return not_before, not_after, info


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _kv_data(data: dict[str, Any]) -> dict[str, Any]:
    """A KV read's values (KV v2 nests them under ``data``)."""
    inner = data.get("data")
    if isinstance(inner, dict) and "metadata" in data:
        return inner
    return data


class RouteCredentials:
    """The ``extras`` resolver of :class:`~socle.network.ingress.service.Ingress`."""

    def __init__(
        self,
        secrets: SecretsCaller | None,
        certs_dir: Path,
        auth_dir: Path,
        *,
        acme: Callable[[Route], Awaitable[Extras]] | None = None,
        clock: Callable[[], float] = time.time,
        auth_group: int | None = None,
    ) -> None:
        self._secrets = secrets
        self._certs_dir = certs_dir
        self._auth_dir = auth_dir
        self._acme = acme
        self._clock = clock
        self._auth_group = auth_group
        self._certs: dict[str, _Cert] = {}
        self._auth: dict[str, tuple[Path, str]] = {}
        self._failed: dict[str, tuple[float, str]] = {}

    async def __call__(self, route: Route) -> Extras:
        spec = route.spec
        if spec.tls is None and spec.basic_auth is None:
            return Extras()
        failed = self._failed.get(route.name)
        if failed is not None and self._clock() - failed[0] < RECHECK_SECONDS:
            return Extras(error=failed[1])
        try:
            extras = Extras()
            if spec.tls is not None:
                if spec.tls.acme is not None:
                    if self._acme is None:
                        raise SocleError("ACME is not available on this control plane")
                    extras = await self._acme(route)
                    if extras.error is not None:
                        return extras
                else:
                    cert = await self._certificate(route)
                    extras.tls, extras.certificate = cert.files, cert.info
            if spec.basic_auth is not None:
                extras.htpasswd = await self._htpasswd(route, spec.basic_auth.secret)
        except SocleError as exc:
            message = f"route {route.name}: {exc.message}"
            self._failed[route.name] = (self._clock(), message)
            return Extras(error=message)
        self._failed.pop(route.name, None)
        return extras

    def _need(self) -> SecretsCaller:
        if self._secrets is None:
            raise SocleError("this control plane has no secrets engine")
        return self._secrets

    async def _certificate(self, route: Route) -> _Cert:
        tls = route.spec.tls
        assert tls is not None
        host = route.spec.host
        source = ("issuer", f"{tls.issuer}#{host}") if tls.issuer else ("secret", tls.secret or "")
        known = self._certs.get(route.name)
        now = self._clock()
        if known is not None and known.source == source and not known.due(now):
            return known
        if known is None and source[0] == "issuer":
            kept = await asyncio.to_thread(self._kept, route.name, source)
            if kept is not None and not kept.due(now):
                self._certs[route.name] = kept
                return kept
        secrets = self._need()
        if tls.issuer is not None:
            data = await secrets.call_as(
                [POLICY], "update", tls.issuer, {"common_name": host, "ttl": CERT_TTL}
            )
            chain = data.get("certificate", "")
            issuing = data.get("issuing_ca")
            if issuing and issuing not in chain:
                chain = chain.rstrip("\n") + "\n" + issuing
            key = data.get("private_key", "")
        else:
            data = _kv_data(await secrets.call_as([POLICY], "read", tls.secret or ""))
            chain, key = data.get("certificate", ""), data.get("private_key", "")
        if not isinstance(chain, str) or not isinstance(key, str) or "BEGIN" not in chain:
            raise SocleError(f"no PEM certificate and private_key at {source[1].split('#')[0]}")
        cert = await asyncio.to_thread(self._write, route.name, chain, key, source)
        self._certs[route.name] = cert
        return cert

    def _paths(self, name: str) -> TlsFiles:
        return TlsFiles(self._certs_dir / f"{name}.crt", self._certs_dir / f"{name}.key")

    def _write(self, name: str, chain: str, key: str, source: tuple[str, str]) -> _Cert:
        private_dir(self._certs_dir)
        files = self._paths(name)
        try:
            not_before, not_after, info = describe(chain.encode())
        except ValueError as exc:
            raise SocleError(f"the certificate for route {name} is not valid PEM") from exc
        # The source file last (and gone first): a crash between the key and the
        # certificate leaves no source, so the next start issues again instead of pairing a
        # new key with an old certificate.
        (self._certs_dir / f"{name}.source").unlink(missing_ok=True)
        write_private(files.key, key)
        write_private(files.cert, chain)
        write_private(self._certs_dir / f"{name}.source", f"{source[0]}\n{source[1]}\n")
        files = TlsFiles(files.cert, files.key, str(info["serial"]))
        return _Cert(files, not_before, not_after, info, source)

    def _kept(self, name: str, source: tuple[str, str]) -> _Cert | None:
        """A certificate a previous control plane issued for the same source, if any."""
        files = self._paths(name)
        try:
            kept_source = (self._certs_dir / f"{name}.source").read_text().split("\n")
            pem = files.cert.read_bytes()
            if not files.key.exists() or tuple(kept_source[:2]) != source:
                return None
            not_before, not_after, info = describe(pem)
        except (OSError, ValueError):
            return None
        files = TlsFiles(files.cert, files.key, str(info["serial"]))
        return _Cert(files, not_before, not_after, info, source)

    async def _htpasswd(self, route: Route, path: str) -> Path:
        data = _kv_data(await self._need().call_as([POLICY], "read", path))
        users = {k: v for k, v in data.items() if isinstance(v, str)}
        if not users:
            raise SocleError(f"basic auth: no users at {path}")
        fingerprint = hashlib.sha256(
            repr(
                sorted((k, hashlib.sha256(v.encode()).hexdigest()) for k, v in users.items())
            ).encode()
        ).hexdigest()
        known = self._auth.get(route.name)
        if known is not None and known[1] == fingerprint:
            return known[0]
        for user in users:
            if ":" in user or "\n" in user or not user:
                raise SocleError(f"basic auth: invalid user name at {path}")
        text = "".join(f"{user}:{ssha(password)}\n" for user, password in sorted(users.items()))
        target = self._auth_dir / f"{route.name}.htpasswd"
        await asyncio.to_thread(self._write_auth, target, text)
        self._auth[route.name] = (target, fingerprint)
        return target

    def _write_auth(self, target: Path, text: str) -> None:
        group = self._auth_group
        if group is None:
            write_private(target, text)
            return
        folder = self._auth_dir
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o750)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise SocleError(f"{folder} is not a folder of this control plane; remove it")
        os.chown(folder, -1, group, follow_symlinks=False)
        os.chmod(folder, 0o750, follow_symlinks=False)  # noqa: S103  (the workers' group reads)
        # Made complete beside the target, then renamed over it: nginx never reads a file
        # it may not open or a half-written one.
        staged = folder / f".{target.name}.new"
        write_private(staged, text)
        os.chown(staged, -1, group, follow_symlinks=False)
        os.chmod(staged, 0o640, follow_symlinks=False)
        os.replace(staged, target)
