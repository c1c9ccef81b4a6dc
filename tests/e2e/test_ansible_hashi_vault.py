"""Ansible's community.hashi_vault lookups read a KV v2 secret from a real Socle server with
AppRole auth: the same playbook a team points at Vault today works against Socle unchanged.

``ansible-playbook`` runs for real (localhost, ``connection: local``) with its home and temp
folders under the test's tmp_path and the AppRole credentials in the environment (not on the
command line), as the collection documents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import hvac
import pytest

from tests.e2e.socle_fixture import SocleServer

VENV_BIN = Path(sys.executable).parent
PLAYBOOK = VENV_BIN / "ansible-playbook"
SECRET = "s3cr3t-from-socle-4b7e"

pytestmark = pytest.mark.skipif(
    not PLAYBOOK.exists(), reason="ansible is not installed (pip install ansible)"
)

READ_BOTH = textwrap.dedent(
    """
    - hosts: localhost
      connection: local
      gather_facts: false
      tasks:
        - name: classic hashi_vault lookup
          ansible.builtin.debug:
            msg: "HV={{ lookup('community.hashi_vault.hashi_vault', 'secret=secret/data/app/db:password') }}"
        - name: vault_kv2_get lookup
          ansible.builtin.debug:
            msg: "KV2={{ lookup('community.hashi_vault.vault_kv2_get', 'app/db').secret.password }} v{{ lookup('community.hashi_vault.vault_kv2_get', 'app/db').metadata.version }}"
    """
)


def vault(server: SocleServer) -> hvac.Client:
    keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
    return hvac.Client(url=server.url, token=keys["root_token"])


def approle(client: hvac.Client, role: str, policy: str) -> tuple[str, str]:
    """A role whose tokens carry exactly ``policy``; returns (role_id, secret_id)."""
    client.auth.approle.create_or_update_approle(role, token_policies=[policy], token_ttl="5m")
    role_id = client.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    return role_id, secret_id


def run_playbook(
    tmp_path: Path, server: SocleServer, role_id: str, secret_id: str
) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "ansible"
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    playbook = work / "read.yml"
    playbook.write_text(READ_BOTH)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "VAULT_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_HOME=str(work / "home"),
        ANSIBLE_LOCAL_TEMP=str(work / "tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_HASHI_VAULT_ADDR=server.url,
        ANSIBLE_HASHI_VAULT_AUTH_METHOD="approle",
        ANSIBLE_HASHI_VAULT_ROLE_ID=role_id,
        ANSIBLE_HASHI_VAULT_SECRET_ID=secret_id,
    )
    return subprocess.run(
        [str(PLAYBOOK), "-i", "localhost,", str(playbook)],
        cwd=work,  # no stray ansible.cfg from the caller's directory
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_lookup_reads_kv2_secret_with_approle(dev_server: SocleServer, tmp_path: Path) -> None:
    client = vault(dev_server)
    client.secrets.kv.v2.create_or_update_secret(
        "app/db", secret={"password": "old"}, mount_point="secret"
    )
    client.secrets.kv.v2.create_or_update_secret(
        "app/db", secret={"password": SECRET, "user": "app"}, mount_point="secret"
    )
    client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(
        "app-db", 'path "secret/data/app/db" { capabilities = ["read"] }'
    )
    role_id, secret_id = approle(client, "deployer", "app-db")

    result = run_playbook(tmp_path, dev_server, role_id, secret_id)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f'"msg": "HV={SECRET}"' in result.stdout
    assert f'"msg": "KV2={SECRET} v2"' in result.stdout
    assert "ok=2" in result.stdout and "failed=0" in result.stdout


def test_lookup_is_refused_outside_the_role_policy(dev_server: SocleServer, tmp_path: Path) -> None:
    client = vault(dev_server)
    client.secrets.kv.v2.create_or_update_secret(
        "app/db", secret={"password": SECRET}, mount_point="secret"
    )
    client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(
        "app-other", 'path "secret/data/app/other" { capabilities = ["read"] }'
    )
    role_id, secret_id = approle(client, "intruder", "app-other")

    result = run_playbook(tmp_path, dev_server, role_id, secret_id)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Permission Denied to secret 'secret/data/app/db'" in output, output
    assert SECRET not in output
