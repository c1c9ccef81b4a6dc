"""TLS routes with certificates from the secrets engine's PKI (checked by curl --cacert),
HTTP->HTTPS redirect, HSTS, and basic auth whose users live in the KV store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import hvac
import yaml

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo


def port(server: SocleServer, which: str) -> int:
    return int(server.env[f"SOCLE_INGRESS_{which}"].rsplit(":", 1)[1])


def vault(server: SocleServer) -> hvac.Client:
    keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
    return hvac.Client(url=server.url, token=keys["root_token"])


def route(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "socle/v1", "kind": "Route", "metadata": {"name": name}, "spec": spec}


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, check=False
    )


def test_pki_certificate_https_redirect_and_basic_auth(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    client = vault(dev_server)
    client.sys.enable_secrets_engine("pki", path="pki")
    root = client.write("pki/root/generate/internal", common_name="Socle Test Root", ttl="87600h")
    ca = tmp_path / "ca.pem"
    ca.write_text(root["data"]["certificate"])
    client.write(
        "pki/roles/web", allowed_domains="example.test", allow_subdomains=True, max_ttl="720h"
    )
    client.secrets.kv.v2.create_or_update_secret(
        "ingress/users", secret={"alice": "wonder-land-42"}, mount_point="secret"
    )
    # Deny by default: the ingress may issue on this role and read these users, no more.
    client.sys.create_or_update_policy(
        "ingress",
        'path "pki/issue/web" { capabilities = ["update"] }\n'
        'path "secret/data/ingress/*" { capabilities = ["read"] }\n',
    )
    repo = write_repo(tmp_path / "repo", {"web": {}})
    (repo / "routes.yaml").write_text(
        yaml.safe_dump_all(
            [
                route(
                    "shop",
                    host="shop.example.test",
                    target={"app": "web", "port": "http"},
                    tls={"issuer": "pki/issue/web"},
                ),
                route(
                    "admin",
                    host="admin.example.test",
                    target={"app": "web", "port": "http"},
                    basicAuth={"secret": "secret/data/ingress/users"},
                ),
            ],
            sort_keys=False,
        )
    )
    dev_server.cli("apply", str(repo), "--yes")
    https, http = port(dev_server, "HTTPS"), port(dev_server, "HTTP")
    url = f"https://shop.example.test:{https}/"
    resolve = ["--resolve", f"shop.example.test:{https}:127.0.0.1"]

    def served() -> bool:  # TLS up AND the app behind it healthy (not nginx's 503)
        answer = curl("--cacert", str(ca), *resolve, url)
        return answer.returncode == 0 and '"version"' in answer.stdout

    wait_for(served, what="the TLS route")
    answer = curl("--cacert", str(ca), *resolve, "-D", "-", url)
    assert answer.returncode == 0 and '"version"' in answer.stdout, answer.stderr
    assert "strict-transport-security: max-age=31536000" in answer.stdout.lower()
    # An unknown CA is refused: the certificate really is the PKI's.
    assert curl(*resolve, url).returncode != 0
    # Plain HTTP redirects to HTTPS.
    plain = curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: shop.example.test",
        f"http://127.0.0.1:{http}/x?y=1",
    )
    assert plain.stdout == f"308 https://shop.example.test:{https}/x?y=1", plain.stdout

    table = json.loads(dev_server.cli("routes", "--json").stdout)
    shop = next(r for r in table["routes"] if r["name"] == "shop")
    assert shop["url"] == url and shop["error"] is None
    assert "Socle Test Root" in shop["certificate"]["issuer"] and shop["certificate"]["not_after"]
    # The app's stable URL is its first route's (by name): admin's here.
    assert dev_server.app("web")["url"] == f"http://admin.example.test:{http}/"
    key = dev_server.home / "ingress" / "certs" / "shop.key"
    assert key.stat().st_mode & 0o077 == 0

    # Basic auth: no or wrong credentials 401, the KV user passes.
    admin = ["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: admin.example.test"]
    base = f"http://127.0.0.1:{http}/"
    assert curl(*admin, base).stdout == "401"
    assert curl(*admin, "-u", "alice:nope", base).stdout == "401"
    assert curl(*admin, "-u", "alice:wonder-land-42", base).stdout == "200"
    # The password is nowhere in plaintext under SOCLE_HOME.
    assert not [
        p
        for p in dev_server.home.rglob("*")
        if p.is_file() and not p.is_symlink() and b"wonder-land-42" in p.read_bytes()
    ]


def test_route_without_grant_is_not_served_and_says_why(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    client = vault(dev_server)
    client.sys.enable_secrets_engine("pki", path="pki")
    client.write("pki/root/generate/internal", common_name="Socle Test Root", ttl="87600h")
    client.write("pki/roles/web", allowed_domains="example.test", allow_subdomains=True)
    repo = write_repo(tmp_path / "repo", {"web": {}})
    (repo / "routes.yaml").write_text(
        yaml.safe_dump(
            route(
                "shop",
                host="shop.example.test",
                target={"app": "web", "port": "http"},
                tls={"issuer": "pki/issue/web"},
            )
        )
    )
    dev_server.cli("apply", str(repo), "--yes")
    table = json.loads(dev_server.cli("routes", "--json").stdout)
    shop = next(r for r in table["routes"] if r["name"] == "shop")
    assert shop["error"] and "permission denied" in shop["error"], shop
    assert "shop.example.test" not in (dev_server.home / "ingress" / "nginx.conf").read_text()
    assert "permission denied" in dev_server.cli("routes").stdout
