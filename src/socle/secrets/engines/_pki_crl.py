"""Revocation for the PKI engine: ``revoke``, the signed CRL, ``config/crl`` and ``tidy``.

The CRL is rebuilt and signed whenever the revoked set changes (revoke, tidy, rotate, a new
CA) and cached in storage with its number, so every reader gets the same signed document
until the next change or until it nears ``next_update``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from socle.secrets.backend import Request, Response, SecretsError, Storage
from socle.secrets.engines._framework import Params, get_json, put_json, rfc3339
from socle.secrets.engines._params import get_bool, get_duration, get_str
from socle.secrets.engines._pki_certs import Issuer, build_crl, colon_serial, normalize_serial
from socle.units import go_duration

DEFAULT_CRL_EXPIRY = 72 * 3600.0
DEFAULT_SAFETY_BUFFER = 72 * 3600.0
TIDY_WARNING = (
    "Tidy operation successfully started. Any information from the operation will be printed "
    "to Vault's server logs."
)


def raw_crl(der: bytes, pem: bool) -> Response:
    if pem:
        crl = x509.load_der_x509_crl(der)
        return Response(
            raw_body=crl.public_bytes(serialization.Encoding.PEM),
            content_type="application/x-pem-file",
        )
    return Response(raw_body=der, content_type="application/pkix-crl")


class CrlStore:
    """Revoked serials and the CRL built from them, for one mount."""

    def __init__(
        self,
        storage: Storage,
        now: Callable[[], float],
        lock: asyncio.Lock,
        issuer: Callable[[], Awaitable[Issuer | None]],
    ) -> None:
        self._storage = storage
        self._now = now
        self._lock = lock
        self._issuer = issuer

    async def _config(self) -> dict[str, Any]:
        raw = await get_json(self._storage, "config/crl") or {}
        return {
            "expiry": float(raw.get("expiry", DEFAULT_CRL_EXPIRY)),
            "disable": bool(raw.get("disable", False)),
        }

    async def config_read(self, request: Request, params: Params) -> Response:
        config = await self._config()
        return Response(
            data={"expiry": go_duration(config["expiry"]), "disable": config["disable"]}
        )

    async def config_write(self, request: Request, params: Params) -> Response:
        config = await self._config()
        if "expiry" in request.data:
            expiry = get_duration(request.data, "expiry")
            if expiry < 60:
                raise SecretsError(400, "CRL expiry must be at least one minute")
            config["expiry"] = expiry
        if "disable" in request.data:
            config["disable"] = get_bool(request.data, "disable")
        await put_json(self._storage, "config/crl", config)
        async with self._lock:
            issuer = await self._issuer()
            if issuer is not None:
                await self.rebuild(issuer)
        return Response()

    async def rebuild(self, issuer: Issuer) -> bytes:
        """Sign a fresh CRL with the next number; the caller holds the engine lock."""
        config = await self._config()
        cached = await get_json(self._storage, "crl") or {}
        number = int(cached.get("number", 0)) + 1
        revoked: list[tuple[int, float]] = []
        if not config["disable"]:
            for key in await self._storage.list("revoked/"):
                entry = await get_json(self._storage, "revoked/" + key)
                if entry is not None:
                    revoked.append((int(key.replace("-", ""), 16), float(entry["revocation_time"])))
        now = self._now()
        crl = build_crl(issuer.cert, issuer.key, revoked, now, config["expiry"], number)
        der = crl.public_bytes(serialization.Encoding.DER)
        await put_json(
            self._storage,
            "crl",
            {
                "der": base64.b64encode(der).decode(),
                "number": number,
                "next_update": now + config["expiry"],
            },
        )
        return der

    async def der(self) -> bytes:
        cached = await get_json(self._storage, "crl")
        if cached is not None and self._now() < float(cached["next_update"]) - 60:
            return base64.b64decode(cached["der"])
        async with self._lock:
            issuer = await self._issuer()
            if issuer is None:
                raise SecretsError(400, "no default issuer currently configured")
            return await self.rebuild(issuer)

    async def crl_raw(self, request: Request, params: Params) -> Response:
        if await self._issuer() is None:
            return Response(status=204)
        return raw_crl(await self.der(), bool(params.get("pem")))

    async def crl_rotate(self, request: Request, params: Params) -> Response:
        async with self._lock:
            issuer = await self._issuer()
            if issuer is None:
                raise SecretsError(400, "no default issuer currently configured")
            await self.rebuild(issuer)
        return Response(data={"success": True})

    async def revoke(self, request: Request, params: Params) -> Response:
        serial_text = get_str(request.data, "serial_number")
        pem = get_str(request.data, "certificate")
        if pem and not serial_text:
            try:
                serial_text = colon_serial(
                    x509.load_pem_x509_certificate(pem.encode()).serial_number
                )
            except ValueError:
                raise SecretsError(400, "certificate could not be parsed") from None
        if not serial_text:
            raise SecretsError(400, "The serial number must be provided")
        serial = normalize_serial(serial_text)
        if not all(c in "0123456789abcdef-" for c in serial) or len(serial) > 128:
            raise SecretsError(400, f"invalid serial number {serial_text[:64]!r}")
        async with self._lock:
            issuer = await self._issuer()
            if issuer is not None and serial == issuer.serial:
                raise SecretsError(
                    400,
                    f"adding issuer (id: {issuer.raw['issuer_id']}) to its own CRL is not allowed",
                )
            entry = await get_json(self._storage, "certs/" + serial)
            if entry is None:
                raise SecretsError(400, f"certificate with serial {serial_text} not found.")
            when = float(entry.get("revocation_time") or 0)
            if not when:
                when = self._now()
                entry["revocation_time"] = when
                await put_json(self._storage, "certs/" + serial, entry)
                await put_json(self._storage, "revoked/" + serial, {"revocation_time": when})
                if issuer is not None:
                    await self.rebuild(issuer)
        return Response(
            data={
                "revocation_time": int(when),
                "revocation_time_rfc3339": rfc3339(when),
                "state": "revoked",
            }
        )

    async def tidy(self, request: Request, params: Params) -> Response:
        """Drop certificates (and their revocation entries) expired beyond the buffer."""
        data = request.data
        tidy_store = get_bool(data, "tidy_cert_store")
        tidy_revoked = get_bool(data, "tidy_revoked_certs")
        buffer = get_duration(data, "safety_buffer", DEFAULT_SAFETY_BUFFER)
        if not (tidy_store or tidy_revoked):
            raise SecretsError(400, "The tidy operation has no work to do")
        cutoff = self._now() - buffer
        async with self._lock:
            changed = False
            for key in await self._storage.list("certs/"):
                entry = await get_json(self._storage, "certs/" + key)
                if entry is None:
                    continue
                cert = x509.load_pem_x509_certificate(entry["certificate"].encode())
                if cert.not_valid_after_utc.timestamp() >= cutoff:
                    continue
                is_revoked = bool(entry.get("revocation_time"))
                if is_revoked and tidy_revoked:
                    await self._storage.delete("revoked/" + key)
                    await self._storage.delete("certs/" + key)
                    changed = True
                elif not is_revoked and tidy_store:
                    await self._storage.delete("certs/" + key)
            issuer = await self._issuer()
            if changed and issuer is not None:
                await self.rebuild(issuer)
        return Response(status=202, warnings=[TIDY_WARNING], data={})
