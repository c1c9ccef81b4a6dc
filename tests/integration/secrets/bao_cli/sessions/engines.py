"""approle login flow, transit, pki, lease and audit as users type them."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.secrets.bao_cli.harness import Session, bao


def _csr(common_name: str) -> str:
    """A fresh CSR (P-256) for ``pki/sign``: its key never leaves this process."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


APP_POLICY = 'path "secret/data/app/*" {\n  capabilities = ["read"]\n}\n'

# Socle has no identity store: logins carry no entity (OpenBao creates one per role).
NO_IDENTITY = (r'^\s*"entity_id": ', r"^entity_id ")

SESSIONS = [
    Session(
        "approle-login",
        [
            bao("auth", "enable", "approle"),
            bao("policy", "write", "app", "-", stdin=APP_POLICY),
            bao(
                "write",
                "auth/approle/role/web",
                "token_policies=app",
                "token_ttl=1h",
                "token_max_ttl=4h",
                "secret_id_ttl=10m",
            ),
            bao("read", "auth/approle/role/web"),
            bao("list", "auth/approle/role"),
            bao("read", "-field=role_id", "auth/approle/role/web/role-id", capture="role_id"),
            bao("write", "-f", "auth/approle/role/web/secret-id"),
            bao(
                "write",
                "-f",
                "-field=secret_id",
                "auth/approle/role/web/secret-id",
                capture="secret_id",
            ),
            bao(
                "write",
                "auth/approle/login",
                "role_id=${role_id}",
                "secret_id=${secret_id}",
                ignore_lines=NO_IDENTITY,
            ),
            bao(
                "write",
                "-field=token",
                "auth/approle/login",
                "role_id=${role_id}",
                "secret_id=${secret_id}",
                capture="app_token",
            ),
            bao("token", "lookup", "-format=json", "${app_token}", ignore_lines=NO_IDENTITY),
            bao("kv", "put", "secret/app/db", "password=pw"),
            bao("kv", "get", "-field=password", "secret/app/db", token="${app_token}"),
            bao("write", "auth/approle/login", "role_id=${role_id}", "secret_id=wrong"),
            bao("list", "auth/approle/role/web/secret-id", unordered=True),
            bao("delete", "auth/approle/role/web"),
            bao("read", "auth/approle/role/web"),
        ],
    ),
    Session(
        "approle-bao-login",
        [
            bao("auth", "enable", "approle"),
            bao("write", "auth/approle/role/ci", "token_policies=default"),
            bao("read", "-field=role_id", "auth/approle/role/ci/role-id", capture="rid"),
            bao("write", "-f", "-field=secret_id", "auth/approle/role/ci/secret-id", capture="sid"),
            bao(
                "login",
                "-method=approle",
                "-no-store",
                "role_id=${rid}",
                "secret_id=${sid}",
                ignore_lines=NO_IDENTITY,
            ),
            bao("write", "-f", "-field=secret_id", "auth/approle/role/ci/secret-id", capture="s2"),
            bao(
                "write",
                "-field=token",
                "auth/approle/login",
                "role_id=${rid}",
                "secret_id=${s2}",
                capture="ci_token",
            ),
            # Not auth/token/create: OpenBao's dev root token was made there and would go too.
            bao("token", "revoke", "-mode=path", "auth/approle/login"),
            bao("token", "lookup", "${ci_token}"),
            bao("lease", "revoke", "-prefix", "auth/approle/"),
        ],
    ),
    Session(
        "transit",
        [
            bao("secrets", "enable", "transit"),
            bao("write", "-f", "transit/keys/orders"),
            bao("read", "transit/keys/orders"),
            bao("list", "transit/keys"),
            bao(
                "write",
                "-field=ciphertext",
                "transit/encrypt/orders",
                "plaintext=aGVsbG8gd29ybGQ=",
                capture="ct",
            ),
            bao("write", "transit/decrypt/orders", "ciphertext=${ct}"),
            bao("write", "-f", "transit/keys/orders/rotate"),
            bao("write", "-field=ciphertext", "transit/rewrap/orders", "ciphertext=${ct}"),
            bao("write", "transit/keys/orders/config", "min_decryption_version=2"),
            bao("write", "transit/decrypt/orders", "ciphertext=${ct}"),
            bao("read", "-format=json", "transit/keys/orders"),
            bao("write", "transit/encrypt/missing", "plaintext=aGk="),
            bao("write", "transit/encrypt/orders", "plaintext=not-base64!"),
            bao("delete", "transit/keys/orders"),
            bao("write", "transit/keys/orders/config", "deletion_allowed=true"),
            bao("delete", "transit/keys/orders"),
        ],
    ),
    Session(
        "pki",
        [
            bao("secrets", "enable", "pki"),
            bao("secrets", "tune", "-max-lease-ttl=87600h", "pki"),
            bao(
                "write",
                "-field=expiration",
                "pki/root/generate/internal",
                "common_name=example.test",
                "ttl=8760h",
                capture="root_expiry",
            ),
            bao("read", "-field=ttl", "pki/cert/ca"),
            bao(
                "write",
                "pki/roles/web",
                "allowed_domains=example.test",
                "allow_subdomains=true",
                "max_ttl=72h",
            ),
            bao("read", "pki/roles/web"),
            bao("list", "pki/roles"),
            bao(
                "write",
                "-format=json",
                "pki/issue/web",
                "common_name=www.example.test",
                "ttl=24h",
            ),
            bao(
                "write",
                "-field=serial_number",
                "pki/issue/web",
                "common_name=api.example.test",
                capture="serial",
            ),
            bao("write", "pki/revoke", "serial_number=${serial}"),
            bao(
                "write",
                "-format=json",
                "pki/sign/web",
                "csr=@req.pem",
                "common_name=app.example.test",
                "ttl=1h",
                files={"req.pem": _csr("app.example.test")},
            ),
            bao(
                "write",
                "pki/sign/web",
                "csr=@bad.pem",
                files={"bad.pem": _csr("evil.other.test")},
            ),
            bao("list", "pki/certs/revoked", unordered=True),
            bao("write", "pki/issue/web", "common_name=evil.other.test"),
            bao("list", "pki/certs", unordered=True),
        ],
    ),
    Session(
        "lease",
        [
            bao("secrets", "enable", "-path=plain", "-version=1", "kv"),
            bao("lease", "lookup", "plain/nothing/abc"),
            bao("lease", "revoke", "-prefix", "plain/"),
            bao("lease", "renew", "plain/nothing/abc"),
            bao("lease", "revoke", "plain/nothing/abc"),
        ],
    ),
    Session(
        "audit",
        [
            bao("audit", "list"),
            bao("audit", "enable", "file", "file_path=stdout"),
            bao("audit", "list"),
            bao("audit", "list", "-detailed"),
            bao("audit", "enable", "-path=second", "file", "file_path=stdout"),
            bao("audit", "disable", "second"),
            bao("audit", "disable", "file"),
            bao("audit", "list"),
            bao("audit", "disable", "nothing"),
        ],
    ),
]
