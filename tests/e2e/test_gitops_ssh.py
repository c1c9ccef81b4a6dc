"""A source over real SSH to a loopback ``sshd`` (key-only auth), its private key stored in
the secrets engine and read by reference (policy ``gitops-<source>``): sync, and a
`rollback --revert` pushed back over SSH. The key never shows in logs, status or events."""

from __future__ import annotations

import json
from pathlib import Path

import hvac

from tests.e2e.gitops_repo import Remote, git, web
from tests.e2e.socle_fixture import SocleServer
from tests.e2e.test_gitops import source, sync, version
from tests.integration.gitops.test_git_ssh import sshd

__all__ = ["sshd"]  # the fixture


def test_a_source_over_ssh_with_its_key_in_the_secrets_engine(
    dev_server: SocleServer, tmp_path: Path, sshd: tuple[int, str]
) -> None:
    server = dev_server
    port, key = sshd
    keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
    vault = hvac.Client(url=server.url, token=keys["root_token"])
    vault.secrets.kv.v2.create_or_update_secret(
        "git/ssh", secret={"ssh_key": key}, mount_point="secret"
    )
    vault.sys.create_or_update_policy(
        "gitops-shop", 'path "secret/data/git/ssh" { capabilities = ["read"] }'
    )
    remote = Remote(tmp_path / "git")
    first = remote.commit_apps("v1", {"shop": web("v1")})
    server.cli(
        "source", "add", "shop", "--repo", f"ssh://root@127.0.0.1:{port}{remote.bare}",
        "--branch", "main", "--path", "deploy", "--env", "dev", "--interval", "1h",
        "--credentials", "secret/data/git/ssh",
    )  # fmt: skip
    code, rows = sync(server, "dev")
    assert code == 0 and rows[0]["commit"]["sha"] == first, rows
    remote.commit_apps("v2", {"shop": web("v2")})
    code, _ = sync(server, "dev")
    assert code == 0 and version(server, "shop") == "v2"

    reverted = json.loads(server.cli("rollback", "dev", "--revert", "--json", timeout=300).stdout)
    assert git(remote.bare, "rev-parse", "main") == reverted["revert"]["sha"]  # pushed over SSH
    assert version(server, "shop") == "v1"
    assert source(server, "shop")["commit"]["sha"] == reverted["revert"]["sha"]

    body = key.strip().splitlines()[1]  # a line of the key's base64 body
    shown = (
        server.log.read_text()
        + server.cli("status", "--json").stdout
        + server.cli("source", "show", "shop", "--json").stdout
        + server.cli("history", "dev", "--json").stdout
        + json.dumps(server.api("GET", "/api/v1/gitops/events").json())
    )
    assert body not in shown
