"""PKI: a certificate authority per mount, with Vault's paths and response shapes.

    root/generate/internal|exported   self-signed CA (exported also returns the key)
    intermediate/generate/internal|exported   a key and a CSR for this mount to become an
                                      intermediate CA (the key waits as ``pending``)
    root/sign-intermediate            this CA signs another mount's (or anyone's) CA CSR
    intermediate/set-signed           install the signed certificate (+ its chain) as the
                                      CA: ``ca_chain`` and issued certificates carry the chain
    root (DELETE)                     forget the CA (issued certificates stay listed)
    config/urls, config/crl           AIA/CDP URLs put in certificates; CRL lifetime
    roles (LIST), roles/<name>        what a role may issue
    issue/<role>                      new key + certificate; sign/<role> signs a CSR
    cert/<serial>[/raw[/pem]], certs (LIST), certs/revoked (LIST)
    ca, ca/pem, ca_chain, crl, crl/pem, crl/rotate   raw DER/PEM bodies
    revoke                            {"serial_number"} → revocation_time, CRL rebuilt
    tidy                              drop certificates expired beyond a safety buffer

One issuer per mount (Vault's multi-issuer API is not implemented). Storage: ``ca`` (the CA
certificate, its private key and, for an intermediate, the chain above it), ``pending`` (an
intermediate key waiting for its certificate), ``role/<name>``, ``certs/<serial>``,
``revoked/<serial>`` and the signed ``crl``; private keys of issued certificates are never
stored.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from socle.secrets.backend import (
    Backend,
    Lease,
    MountInfo,
    Request,
    Response,
    SecretsError,
    Storage,
)
from socle.secrets.engines import _pki_issue as issuing
from socle.secrets.engines._framework import (
    NAME,
    SYSTEM_TTL,
    Clock,
    Params,
    Route,
    RoutedBackend,
    Router,
    get_json,
    go_duration,
    handlers,
    list_response,
    put_json,
    rfc3339,
    system_clock,
)
from socle.secrets.engines._params import (
    get_bool,
    get_duration,
    get_int,
    get_str,
    get_str_list,
)
from socle.secrets.engines._pki_certs import (
    CertError,
    Issuer,
    LeafRequest,
    PublicKey,
    Subject,
    Urls,
    build_csr,
    build_root,
    cert_pem,
    colon_serial,
    generate_key,
    issue_leaf,
    key_type_of,
    load_private_key,
    normalize_serial,
    private_key_pem,
    sign_intermediate,
)
from socle.secrets.engines._pki_crl import CrlStore, raw_crl
from socle.secrets.engines._pki_roles import PkiRole

SERIAL = r"(?P<serial>[0-9A-Fa-f:-]+|ca|crl|ca_chain)"


NO_AIA_WARNING = (
    "This mount hasn't configured any authority information access (AIA) fields; this may "
    "make it harder for systems to find missing certificates in the chain or to validate "
    "revocation status of certificates. Consider updating /config/urls or the newly "
    "generated issuer with this information."
)


class PkiBackend(RoutedBackend):
    """One mounted PKI engine."""

    unauthenticated_paths = ("cert/*", "ca", "ca/pem", "ca_chain", "crl", "crl/pem")
    """Read without a token in Vault (``PathsSpecial.Unauthenticated``)."""
    sudo_paths = ("root", "root/sign-self-issued")
    """Replacing or deleting the CA needs ``sudo`` as in Vault."""

    def __init__(self, storage: Storage, mount: MountInfo, clock: Clock = system_clock) -> None:
        self._storage = storage
        self._mount = mount
        self._clock = clock
        self._lock = asyncio.Lock()
        self._crl = CrlStore(storage, self._now, self._lock, self._ca)
        crl = self._crl
        self._router = Router(
            [
                Route(
                    r"root/generate/(?P<kind>internal|exported)",
                    handlers(write=self._root_generate),
                ),
                Route("root", handlers(delete=self._root_delete)),
                Route(
                    r"intermediate/generate/(?P<kind>internal|exported)",
                    handlers(write=self._intermediate_generate),
                ),
                Route("root/sign-intermediate", handlers(write=self._sign_intermediate)),
                Route("intermediate/set-signed", handlers(write=self._set_signed)),
                Route("config/urls", handlers(read=self._urls_read, write=self._urls_write)),
                Route("config/crl", handlers(read=crl.config_read, write=crl.config_write)),
                Route(r"roles/?", handlers(list_=self._roles_list)),
                Route(
                    f"roles/(?P<name>{NAME})",
                    handlers(
                        read=self._role_read, write=self._role_write, delete=self._role_delete
                    ),
                    exists=self._role_exists,
                ),
                Route(f"issue/(?P<role>{NAME})", handlers(write=self._issue)),
                Route(f"sign/(?P<role>{NAME})", handlers(write=self._sign)),
                Route(f"cert/{SERIAL}(?P<raw>/raw(?:/pem)?)?", handlers(read=self._cert_read)),
                Route(r"certs/?", handlers(list_=self._certs_list)),
                Route(r"certs/revoked/?", handlers(list_=self._revoked_list)),
                Route(r"ca(?P<pem>/pem)?", handlers(read=self._ca_raw)),
                Route("ca_chain", handlers(read=self._ca_chain)),
                Route(r"crl(?P<pem>/pem)?", handlers(read=crl.crl_raw)),
                Route("crl/rotate", handlers(read=crl.crl_rotate)),
                Route("revoke", handlers(write=crl.revoke)),
                Route("tidy", handlers(write=crl.tidy)),
            ]
        )

    # -- Backend protocol -------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            return await self._router.dispatch(request)
        except CertError as exc:
            raise SecretsError(400, str(exc)) from None

    async def revoke(self, lease: Lease) -> None:
        """Certificates are revoked through ``revoke``, not leases."""

    async def renew(self, lease: Lease, increment: float | None) -> Lease:
        raise SecretsError(400, "certificates are not renewable")

    # -- helpers ----------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() / 1e9

    def _mount_ttls(self) -> tuple[float, float]:
        default = self._mount.default_lease_ttl or SYSTEM_TTL
        maximum = self._mount.max_lease_ttl or SYSTEM_TTL
        return min(default, maximum), maximum

    async def _ca(self) -> Issuer | None:
        raw = await get_json(self._storage, "ca")
        return Issuer(raw) if raw is not None else None

    async def _require_ca(self) -> Issuer:
        ca = await self._ca()
        if ca is None:
            raise SecretsError(400, "no default issuer currently configured")
        return ca

    async def _urls(self) -> Urls:
        raw = await get_json(self._storage, "config/urls") or {}
        return Urls(**raw)

    async def _store_cert(self, cert: x509.Certificate) -> None:
        serial = normalize_serial(colon_serial(cert.serial_number))
        await put_json(
            self._storage, "certs/" + serial, {"certificate": cert_pem(cert), "revocation_time": 0}
        )

    # -- root -------------------------------------------------------------------------

    async def _root_generate(self, request: Request, params: Params) -> Response:
        data = request.data
        common_name = get_str(data, "common_name")
        if not common_name:
            raise SecretsError(400, "the common_name field is required")
        _, maximum = self._mount_ttls()
        ttl = get_duration(data, "ttl") or maximum
        warnings: list[str] = []
        if ttl > maximum:
            warnings.append(
                f'TTL "{go_duration(ttl)}" is longer than permitted maxTTL '
                f'"{go_duration(maximum)}", so maxTTL is being used'
            )
            ttl = maximum
        key_type = get_str(data, "key_type", "rsa") or "rsa"
        key_bits = get_int(data, "key_bits")
        max_path_length = get_int(data, "max_path_length", -1)
        subject = Subject(
            common_name,
            get_str_list(data, "organization") or [],
            get_str_list(data, "ou") or [],
            get_str_list(data, "country") or [],
        )
        subject.name()  # refuse a bad subject before generating a key
        async with self._lock:
            if await self._ca() is not None:
                raise SecretsError(
                    400,
                    "a CA is already configured on this mount; delete it first "
                    f"(DELETE {self._mount.path}root) to generate a new one",
                )
            key = await asyncio.to_thread(generate_key, key_type, key_bits)
            urls = await self._urls()
            if not any(urls.__dict__.values()):
                warnings.append(NO_AIA_WARNING)
            cert = build_root(key, subject, self._now(), ttl, max_path_length, urls)
            issuer_id, key_id = str(uuid.uuid4()), str(uuid.uuid4())
            await put_json(
                self._storage,
                "ca",
                {
                    "certificate": cert_pem(cert),
                    "private_key": private_key_pem(key, "pkcs8"),
                    "issuer_id": issuer_id,
                    "key_id": key_id,
                    "issuer_name": get_str(data, "issuer_name"),
                    "key_name": get_str(data, "key_name"),
                },
            )
            await self._store_cert(cert)
            issuer = await self._ca()
            assert issuer is not None
            await self._crl.rebuild(issuer)
        pem = cert_pem(cert)
        body: dict[str, Any] = {
            "certificate": pem,
            "issuing_ca": pem,
            "serial_number": colon_serial(cert.serial_number),
            "expiration": int(cert.not_valid_after_utc.timestamp()),
            "issuer_id": issuer_id,
            "issuer_name": get_str(data, "issuer_name"),
            "key_id": key_id,
            "key_name": get_str(data, "key_name"),
        }
        if params["kind"] == "exported":
            body["private_key"] = private_key_pem(key)
            body["private_key_type"] = key_type_of(key)
        return Response(data=body, warnings=warnings)

    # -- intermediate -----------------------------------------------------------------

    def _subject(self, data: dict[str, Any], common_name: str) -> Subject:
        subject = Subject(
            common_name,
            get_str_list(data, "organization") or [],
            get_str_list(data, "ou") or [],
            get_str_list(data, "country") or [],
        )
        subject.name()  # a bad subject is refused before any key is made
        return subject

    async def _intermediate_generate(self, request: Request, params: Params) -> Response:
        """Make a key and a CSR for this mount to become an intermediate CA."""
        data = request.data
        subject = self._subject(data, get_str(data, "common_name"))
        key_type = get_str(data, "key_type", "rsa") or "rsa"
        key = await asyncio.to_thread(generate_key, key_type, get_int(data, "key_bits"))
        csr = build_csr(key, subject)
        key_id = str(uuid.uuid4())
        async with self._lock:
            await put_json(
                self._storage,
                "pending",
                {
                    "private_key": private_key_pem(key, "pkcs8"),
                    "key_id": key_id,
                    "key_name": get_str(data, "key_name"),
                },
            )
        body: dict[str, Any] = {
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode().strip(),
            "key_id": key_id,
        }
        if params["kind"] == "exported":
            body["private_key"] = private_key_pem(key)
            body["private_key_type"] = key_type_of(key)
        return Response(data=body)

    async def _sign_intermediate(self, request: Request, params: Params) -> Response:
        """Sign a CA certificate request with this mount's CA."""
        data = request.data
        form = issuing.check_format(data)
        csr_text = get_str(data, "csr")
        if not csr_text.strip():
            raise SecretsError(400, "csr contains no data")
        try:
            csr = x509.load_pem_x509_csr(csr_text.encode())
        except ValueError:
            raise SecretsError(400, "certificate request could not be parsed") from None
        if not csr.is_signature_valid:
            raise SecretsError(400, "request signature invalid")
        public = csr.public_key()
        if not isinstance(
            public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
        ):
            raise SecretsError(400, "unsupported key type in the certificate request")
        common_name = get_str(data, "common_name")
        use_csr = get_bool(data, "use_csr_values")
        if common_name and not use_csr:
            name = self._subject(data, common_name).name()
        else:
            name = csr.subject
        if not name.get_attributes_for_oid(NameOID.COMMON_NAME):
            raise SecretsError(400, "the common_name field is required (or in the CSR)")
        ca = await self._require_ca()
        _, maximum = self._mount_ttls()
        now = self._now()
        ttl = get_duration(data, "ttl") or maximum
        warnings: list[str] = []
        if ttl > maximum:
            warnings.append(
                f'TTL "{go_duration(ttl)}" is longer than permitted maxTTL '
                f'"{go_duration(maximum)}", so maxTTL is being used'
            )
            ttl = maximum
        not_after = now + ttl
        if not_after > ca.not_after:
            warnings.append(
                "The expiration time for the signed certificate was after the CA's expiration "
                "time; it expires with the CA instead"
            )
            not_after = ca.not_after
        cert = sign_intermediate(
            public,
            name,
            ca,
            now - 30,
            not_after,
            get_int(data, "max_path_length", -1),
            await self._urls(),
        )
        await self._store_cert(cert)
        body = issuing.certificate_response(cert, ca.cert, form, parents=ca.parents)
        return Response(data=body, warnings=warnings)

    async def _set_signed(self, request: Request, params: Params) -> Response:
        """Install the signed intermediate certificate (and the chain after it)."""
        text = get_str(request.data, "certificate")
        async with self._lock:
            pending = await get_json(self._storage, "pending")
            if pending is None:
                raise SecretsError(
                    400,
                    "no pending intermediate key on this mount: "
                    "write intermediate/generate/internal first",
                )
            try:
                certs = x509.load_pem_x509_certificates(text.encode()) if text.strip() else []
            except ValueError:
                raise SecretsError(400, "the certificate could not be parsed as PEM") from None
            if not certs:
                raise SecretsError(400, "no certificate was given")
            cert, *chain = certs
            if await self._ca() is not None:
                raise SecretsError(
                    400,
                    "a CA is already configured on this mount; delete it first "
                    f"(DELETE {self._mount.path}root) to install an intermediate",
                )
            key = load_private_key(pending["private_key"])
            if cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) != key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ):
                raise SecretsError(
                    400, "the certificate is not for this mount's pending intermediate key"
                )
            try:
                constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
            except x509.ExtensionNotFound:
                constraints = None
            if constraints is None or not constraints.value.ca:
                raise SecretsError(400, "the certificate is not a CA certificate")
            issuer_id = str(uuid.uuid4())
            await put_json(
                self._storage,
                "ca",
                {
                    "certificate": cert_pem(cert),
                    "private_key": pending["private_key"],
                    "issuer_id": issuer_id,
                    "key_id": pending["key_id"],
                    "issuer_name": "",
                    "key_name": pending.get("key_name", ""),
                    "chain": [cert_pem(c) for c in chain],
                },
            )
            await self._storage.delete("pending")
            await self._store_cert(cert)
            issuer = await self._ca()
            assert issuer is not None
            await self._crl.rebuild(issuer)
        return Response(
            data={
                "existing_issuers": None,
                "existing_keys": None,
                "imported_issuers": [issuer_id],
                "imported_keys": None,
                "mapping": {issuer_id: pending["key_id"]},
            }
        )

    async def _root_delete(self, request: Request, params: Params) -> Response:
        async with self._lock:
            await self._storage.delete("ca")
            await self._storage.delete("crl")
        return Response()

    # -- config -----------------------------------------------------------------------

    async def _urls_read(self, request: Request, params: Params) -> Response:
        urls = await self._urls()
        return Response(
            data={
                "issuing_certificates": urls.issuing_certificates,
                "crl_distribution_points": urls.crl_distribution_points,
                "ocsp_servers": urls.ocsp_servers,
                "enable_templating": False,
            }
        )

    async def _urls_write(self, request: Request, params: Params) -> Response:
        urls = await self._urls()
        for name in ("issuing_certificates", "crl_distribution_points", "ocsp_servers"):
            values = get_str_list(request.data, name)
            if values is None:
                continue
            for value in values:
                if not value.startswith(("http://", "https://", "ldap://")):
                    raise SecretsError(400, f"invalid URL found in {name}: {value[:100]}")
            setattr(urls, name, values)
        await put_json(self._storage, "config/urls", urls.__dict__)
        return Response()

    # -- roles ------------------------------------------------------------------------

    async def _role(self, name: str) -> PkiRole | None:
        raw = await get_json(self._storage, "role/" + name)
        return PkiRole.from_json(raw) if raw is not None else None

    async def _role_exists(self, request: Request, params: Params) -> bool:
        return await self._storage.get("role/" + params["name"]) is not None

    async def _roles_list(self, request: Request, params: Params) -> Response:
        return list_response(await self._storage.list("role/"))

    async def _role_read(self, request: Request, params: Params) -> Response:
        role = await self._role(params["name"])
        if role is None:
            raise SecretsError(404)
        return Response(data=role.describe())

    async def _role_write(self, request: Request, params: Params) -> Response:
        current = await self._role(params["name"])
        try:
            role = PkiRole.from_request(request.data, current)
        except ValueError as exc:
            raise SecretsError(400, str(exc)) from None
        await put_json(self._storage, "role/" + params["name"], role.describe())
        return Response(data=role.describe())

    async def _role_delete(self, request: Request, params: Params) -> Response:
        await self._storage.delete("role/" + params["name"])
        return Response()

    # -- issue and sign ---------------------------------------------------------------

    async def _issuing_role(self, name: str) -> PkiRole:
        role = await self._role(name)
        if role is None:
            raise SecretsError(400, f"unknown role: {name}")
        return role

    async def _issue(self, request: Request, params: Params) -> Response:
        role = await self._issuing_role(params["role"])
        if role.key_type == "any":
            raise SecretsError(
                400, 'role key type "any" not allowed for issuing certificates, only signing'
            )
        data = request.data
        form = issuing.check_format(data)
        key_format = get_str(data, "private_key_format", "der") or "der"
        if key_format not in ("der", "pem", "pkcs8"):
            raise SecretsError(400, f'invalid private_key_format "{key_format[:20]}"')
        ca = await self._require_ca()
        names = issuing.resolve_names(role, data)
        not_before, not_after, warnings = issuing.validity(
            role, data, self._now(), ca.not_after, *self._mount_ttls()
        )
        key = await asyncio.to_thread(generate_key, role.key_type, role.key_bits)
        cert = await self._sign_leaf(role, names, key.public_key(), not_before, not_after, ca)
        pem = private_key_pem(key, "pkcs8" if key_format == "pkcs8" else "")
        body = issuing.certificate_response(
            cert, ca.cert, form, (pem, key_type_of(key)), ca.parents
        )
        return Response(data=body, warnings=warnings)

    async def _sign(self, request: Request, params: Params) -> Response:
        role = await self._issuing_role(params["role"])
        data = request.data
        form = issuing.check_format(data)
        csr_text = get_str(data, "csr")
        if not csr_text:
            raise SecretsError(400, "certificate request could not be found")
        try:
            csr = x509.load_pem_x509_csr(csr_text.encode())
        except ValueError:
            raise SecretsError(400, "certificate request could not be parsed") from None
        if not csr.is_signature_valid:
            raise SecretsError(400, "request signature invalid")
        public = _csr_key(role, csr.public_key())
        ca = await self._require_ca()
        names = issuing.resolve_names(role, data, csr)
        not_before, not_after, warnings = issuing.validity(
            role, data, self._now(), ca.not_after, *self._mount_ttls()
        )
        cert = await self._sign_leaf(role, names, public, not_before, not_after, ca)
        return Response(
            data=issuing.certificate_response(cert, ca.cert, form, parents=ca.parents),
            warnings=warnings,
        )

    async def _sign_leaf(
        self,
        role: PkiRole,
        names: issuing.Names,
        public: PublicKey,
        not_before: float,
        not_after: float,
        ca: Issuer,
    ) -> x509.Certificate:
        leaf = LeafRequest(
            subject=names.subject,
            public_key=public,
            dns_names=names.dns,
            ip_addresses=names.ips,
            emails=names.emails,
            not_before=not_before,
            not_after=not_after,
            server=role.server_flag,
            client=role.client_flag,
            key_usage=role.key_usage,
        )
        cert = issue_leaf(leaf, ca.cert, ca.key, await self._urls())
        if not role.no_store:
            await self._store_cert(cert)
        return cert

    # -- reading certificates ---------------------------------------------------------

    async def _cert_read(self, request: Request, params: Params) -> Response:
        serial = params["serial"]
        raw = params.get("raw")
        if serial == "crl":
            der = await self._crl.der()
            if raw:
                return raw_crl(der, raw.endswith("/pem"))
            pem = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM).decode()
            return Response(data={"certificate": pem.strip()})
        if serial == "ca_chain":
            ca = await self._require_ca()
            pems = [cert_pem(c) for c in ca.chain]
            return Response(data={"certificate": "\n".join(pems), "ca_chain": pems})
        if serial == "ca":
            ca = await self._require_ca()
            if raw:
                return _raw_cert(ca.cert, raw.endswith("/pem"))
            return Response(data={"certificate": ca.pem, "revocation_time": 0})
        entry = await get_json(self._storage, "certs/" + normalize_serial(serial))
        if entry is None:
            raise SecretsError(404)
        if raw:
            cert = x509.load_pem_x509_certificate(entry["certificate"].encode())
            return _raw_cert(cert, raw.endswith("/pem"))
        revoked_at = float(entry.get("revocation_time") or 0)
        return Response(
            data={
                "certificate": entry["certificate"],
                "revocation_time": int(revoked_at),
                "revocation_time_rfc3339": rfc3339(revoked_at) if revoked_at else "",
            }
        )

    async def _certs_list(self, request: Request, params: Params) -> Response:
        return _serials(await self._storage.list("certs/"))

    async def _revoked_list(self, request: Request, params: Params) -> Response:
        return _serials(await self._storage.list("revoked/"))

    async def _ca_raw(self, request: Request, params: Params) -> Response:
        ca = await self._ca()
        if ca is None:
            return Response(status=204)
        return _raw_cert(ca.cert, bool(params.get("pem")))

    async def _ca_chain(self, request: Request, params: Params) -> Response:
        ca = await self._ca()
        if ca is None:
            return Response(status=204)
        chain = "\n".join(cert_pem(c) for c in ca.chain)
        return Response(
            raw_body=(chain + "\n").encode(), content_type="application/pem-certificate-chain"
        )


def _csr_key(role: PkiRole, public: object) -> PublicKey:
    """The CSR's key must be one we sign, of the role's type and at least its size."""
    if not isinstance(
        public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    ):
        raise SecretsError(400, "unsupported key type in the certificate request")
    if role.key_type == "any":
        return public
    actual = key_type_of(public)
    if actual != role.key_type:
        raise SecretsError(400, f"role requires keys of type {role.key_type}")
    size = public.key_size if isinstance(public, rsa.RSAPublicKey) else 0
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = public.curve.key_size
    if size < role.key_bits:
        raise SecretsError(400, f"role requires a minimum of {role.key_bits}-bit {actual} keys")
    return public


def _raw_cert(cert: x509.Certificate, pem: bool) -> Response:
    if pem:
        return Response(
            raw_body=cert.public_bytes(serialization.Encoding.PEM),
            content_type="application/pem-certificate-chain",
        )
    return Response(
        raw_body=cert.public_bytes(serialization.Encoding.DER), content_type="application/pkix-cert"
    )


async def pki_factory(storage: Storage, mount: MountInfo) -> Backend:
    """Registry entry: build the engine for a new or restored mount."""
    return PkiBackend(storage, mount)


def _serials(stored: list[str]) -> Response:
    """Serials are stored with hyphens and listed with colons, as OpenBao lists them."""
    return list_response([serial.replace("-", ":") for serial in stored])
