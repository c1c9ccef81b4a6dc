"""Certificates from an ACME server (Let's Encrypt, pebble, any RFC 8555 CA), HTTP-01.

:class:`AcmeClient` speaks the protocol (JWS with an ES256 account key, nonces, account,
order, authorization, challenge, finalize, download); :class:`AcmeCertificates` is the
ingress's side: a route with ``tls.acme`` gets a certificate issued in the background (the
route is not served over TLS until it has one), renewed once two thirds of its lifetime
passed (the old one keeps serving meanwhile). HTTP-01 tokens are files under the folder
nginx serves at ``/.well-known/acme-challenge/`` on every plain-HTTP host, so the CA's
validation request reaches the ingress port like any other request.

Account keys live in ``ingress/acme/`` (owner-only), one per directory URL; certificate
keys beside the other route certificates.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from socle.errors import SocleError
from socle.fs import private_dir, write_private
from socle.model.route import Route
from socle.network.ingress.render import TlsFiles
from socle.network.ingress.service import Extras

log = logging.getLogger("socle.ingress")

POLL_SECONDS = 0.5
ORDER_TIMEOUT = 120.0
RETRY_SECONDS = 30.0
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
"""An HTTP-01 token: base64url only (it becomes a file name the ingress serves)."""


class AcmeError(SocleError):
    """The ACME server refused or failed an order."""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int) -> str:
    return b64(value.to_bytes(32, "big"))


class AcmeClient:
    """One account on one ACME directory."""

    def __init__(
        self,
        directory: str,
        key: ec.EllipticCurvePrivateKey,
        *,
        email: str | None = None,
        verify: str | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.directory_url = _https(directory)
        self.key = key
        self.email = email
        context: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._http = httpx.AsyncClient(verify=context, timeout=30, transport=transport)
        self._directory: dict[str, Any] = {}
        self._nonce: str | None = None
        self.kid: str | None = None

    async def close(self) -> None:
        await self._http.aclose()

    @property
    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        return {"crv": "P-256", "kty": "EC", "x": _int_b64(numbers.x), "y": _int_b64(numbers.y)}

    def thumbprint(self) -> str:
        canonical = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        return b64(hashlib.sha256(canonical).digest())

    async def _get_directory(self) -> dict[str, Any]:
        if not self._directory:
            response = await self._http.get(self.directory_url)
            if response.status_code != 200:
                raise AcmeError(f"ACME directory {self.directory_url}: HTTP {response.status_code}")
            self._directory = response.json()
        return self._directory

    async def _new_nonce(self) -> str:
        url = _https((await self._get_directory())["newNonce"])
        response = await self._http.head(url)
        nonce = response.headers.get("Replay-Nonce")
        if not nonce:
            raise AcmeError("the ACME server gave no nonce")
        return str(nonce)

    def _sign(self, url: str, payload: Any, nonce: str) -> dict[str, str]:
        protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
        if self.kid is None:
            protected["jwk"] = self.jwk
        else:
            protected["kid"] = self.kid
        body = "" if payload is None else b64(json.dumps(payload).encode())
        head = b64(json.dumps(protected).encode())
        der = self.key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return {"protected": head, "payload": body, "signature": signature}

    async def post(self, url: str, payload: Any, *, accept: str | None = None) -> httpx.Response:
        """A signed POST (``payload`` None: POST-as-GET); retried once on a bad nonce."""
        url = _https(url)
        for attempt in range(2):
            nonce = self._nonce or await self._new_nonce()
            self._nonce = None
            headers = {"Content-Type": "application/jose+json"}
            if accept:
                headers["Accept"] = accept
            response = await self._http.post(
                url, content=json.dumps(self._sign(url, payload, nonce)), headers=headers
            )
            self._nonce = response.headers.get("Replay-Nonce")
            if response.status_code < 400:
                return response
            problem = _problem(response)
            if attempt == 0 and problem.get("type", "").endswith(":badNonce"):
                continue
            raise AcmeError(
                f"ACME {url}: {problem.get('detail') or response.status_code}",
                hint="see the ACME server's logs for the order",
            )
        raise AcmeError("unreachable")  # pragma: no cover

    async def account(self) -> str:
        if self.kid is None:
            url = (await self._get_directory())["newAccount"]
            payload: dict[str, Any] = {"termsOfServiceAgreed": True}
            if self.email:
                payload["contact"] = [f"mailto:{self.email}"]
            response = await self.post(url, payload)
            self.kid = str(response.headers["Location"])
        return self.kid

    async def _poll(self, url: str, done: set[str]) -> dict[str, Any]:
        deadline = time.monotonic() + ORDER_TIMEOUT
        while True:
            data: dict[str, Any] = (await self.post(url, None)).json()
            status = data.get("status")
            if status in done:
                return data
            if status == "invalid":
                detail = json.dumps(data.get("error") or data.get("challenges") or data)[:500]
                raise AcmeError(f"ACME object {url} is invalid: {detail}")
            if time.monotonic() > deadline:
                raise AcmeError(f"ACME object {url} still {status} after {ORDER_TIMEOUT:.0f}s")
            await asyncio.sleep(POLL_SECONDS)

    async def issue(
        self,
        host: str,
        key: ec.EllipticCurvePrivateKey,
        publish: Callable[[str, str], None],
        withdraw: Callable[[str], None],
    ) -> str:
        """A PEM chain for ``host``: order, answer HTTP-01 by ``publish(token, content)``,
        finalize with a CSR for ``key``, download."""
        await self.account()
        url = (await self._get_directory())["newOrder"]
        response = await self.post(url, {"identifiers": [{"type": "dns", "value": host}]})
        order_url = response.headers["Location"]
        order = response.json()
        for authz_url in order["authorizations"]:
            authz = (await self.post(authz_url, None)).json()
            if authz.get("status") == "valid":
                continue
            challenge = next((c for c in authz["challenges"] if c["type"] == "http-01"), None)
            if challenge is None:
                raise AcmeError(f"the ACME server offers no http-01 challenge for {host}")
            token = challenge["token"]
            publish(token, f"{token}.{self.thumbprint()}")
            try:
                await self.post(challenge["url"], {})
                await self._poll(authz_url, {"valid"})
            finally:
                withdraw(token)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        der = csr.public_bytes(serialization.Encoding.DER)
        await self.post(order["finalize"], {"csr": b64(der)})
        order = await self._poll(order_url, {"valid"})
        response = await self.post(
            order["certificate"], None, accept="application/pem-certificate-chain"
        )
        return response.text


def _https(url: object) -> str:
    """``url`` if it is an https URL. Every URL the client follows comes from the ACME
    server (directory, ``Location``, order fields); a hostile server listing
    ``http://169.254.169.254/...`` or a loopback API would make the control plane send
    requests there and show their answers in the route's error."""
    if not isinstance(url, str) or not url.startswith("https://") or len(url) > 2048:
        raise AcmeError(
            f"the ACME server sent a URL that is not https: {str(url)[:100]!r}",
            hint="ACME directories and every URL they list must be https",
        )
    return url


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class AcmeCertificates:
    """The ``tls.acme`` part of the ingress's route credentials."""

    def __init__(
        self,
        folder: Path,
        certs_dir: Path,
        challenge_dir: Path,
        *,
        changed: Callable[[], None],
        verify: str | bool = True,
        challenge_owner: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._folder = folder
        self._certs_dir = certs_dir
        self._challenges = challenge_dir
        self._changed = changed
        self._verify = verify
        self._owner = challenge_owner
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._errors: dict[str, tuple[float, str]] = {}
        self.issued = 0
        """Certificates obtained since start (tests and status)."""

    def set_changed(self, changed: Callable[[], None]) -> None:
        self._changed = changed

    async def __call__(self, route: Route) -> Extras:
        from socle.network.ingress.credentials import describe

        tls = route.spec.tls
        assert tls is not None and tls.acme is not None
        name, host = route.name, route.spec.host
        files = TlsFiles(self._certs_dir / f"{name}.crt", self._certs_dir / f"{name}.key")
        source = f"acme\n{tls.acme.directory}#{host}\n"
        current: tuple[TlsFiles, dict[str, Any]] | None = None
        due = True
        try:
            if (self._certs_dir / f"{name}.source").read_text() == source:
                not_before, not_after, info = describe(files.cert.read_bytes())
                if files.key.exists() and not_after > self._clock():
                    current = (TlsFiles(files.cert, files.key, str(info["serial"])), info)
                    due = self._clock() >= not_before + (not_after - not_before) * 2 / 3
        except (OSError, ValueError):
            pass
        if due and name not in self._tasks:
            error = self._errors.get(name)
            if error is None or self._clock() - error[0] >= RETRY_SECONDS:
                self._tasks[name] = asyncio.get_running_loop().create_task(
                    self._issue(route, files, source), name=f"ingress-acme:{name}"
                )
        if current is not None:
            return Extras(tls=current[0], certificate={**current[1], "acme": True})
        error = self._errors.get(name)
        message = error[1] if error else "waiting for the ACME certificate"
        return Extras(error=f"route {name}: {message}")

    async def _issue(self, route: Route, files: TlsFiles, source: str) -> None:
        tls = route.spec.tls
        assert tls is not None and tls.acme is not None
        name = route.name
        client: AcmeClient | None = None
        try:
            client = AcmeClient(
                tls.acme.directory,
                await asyncio.to_thread(self._account_key, tls.acme.directory),
                email=tls.acme.email,
                verify=self._verify,
            )
            key = ec.generate_private_key(ec.SECP256R1())
            chain = await client.issue(route.spec.host, key, self._publish, self._withdraw)
            pem_key = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            await asyncio.to_thread(self._write, name, files, chain, pem_key, source)
            self._errors.pop(name, None)
            self.issued += 1
            log.info("ingress: ACME certificate issued for route %s", name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, SocleError) else f"ACME: {exc!r}"
            self._errors[name] = (self._clock(), message)
            log.warning("ingress: route %s: %s", name, message)
        finally:
            if client is not None:
                await client.close()
            self._tasks.pop(name, None)
            self._changed()

    def _write(self, name: str, files: TlsFiles, chain: str, key: bytes, source: str) -> None:
        private_dir(self._certs_dir)
        (self._certs_dir / f"{name}.source").unlink(missing_ok=True)  # see credentials._write
        write_private(files.key, key)
        write_private(files.cert, chain)
        write_private(self._certs_dir / f"{name}.source", source)

    def _account_key(self, directory: str) -> ec.EllipticCurvePrivateKey:
        private_dir(self._folder)
        path = self._folder / f"account-{hashlib.sha256(directory.encode()).hexdigest()[:16]}.key"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
        except (OSError, ValueError):
            pass
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return key

    def _publish(self, token: str, content: str) -> None:
        folder = self._challenges / ".well-known" / "acme-challenge"
        for path in (self._challenges, self._challenges / ".well-known", folder):
            path.mkdir(mode=0o700, exist_ok=True)
            if self._owner is not None:
                os.chown(path, self._owner, -1, follow_symlinks=False)
        if not _TOKEN_RE.fullmatch(token):
            raise AcmeError("the ACME server sent a token that is not base64url")
        target = folder / token
        write_private(target, content)
        if self._owner is not None:
            os.chown(target, self._owner, -1, follow_symlinks=False)

    def _withdraw(self, token: str) -> None:
        if not _TOKEN_RE.fullmatch(token):
            return  # never published (see _publish)
        (self._challenges / ".well-known" / "acme-challenge" / token).unlink(missing_ok=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
