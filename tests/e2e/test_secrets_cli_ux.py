"""Dev-mode and policy UX of `socle secrets`, through the real CLI against a real server.

In dev mode the CLI finds the root token itself (never printing it); `socle secrets policy`
and `socle secrets grant` manage ACL policies; the missing-policy error at apply names the
App manifest and the exact command that fixes it, and running that command fixes it. Bad
and hostile input exits non-zero with the file/line or the name at fault, and writes nothing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import hvac
import pytest

from tests.e2e.socle_fixture import SOCLE, SocleServer, write_repo

DEV_KEY_FILE = "secrets-dev-unseal.key"


def root_token(server: SocleServer) -> str:
    token: str = json.loads((server.home / DEV_KEY_FILE).read_text())["root_token"]
    return token


def run(
    server: SocleServer, *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SOCLE, *args],
        env=server.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def policies(server: SocleServer) -> list[str]:
    names: list[str] = json.loads(server.cli("secrets", "policy", "list", "--json").stdout)
    return names


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_socle_secrets_works_out_of_the_box_in_dev_mode(dev_server: SocleServer) -> None:
    assert not any(k.startswith("VAULT_") for k in dev_server.env)
    dev_server.cli("secrets", "put", "team/db", "password=s3cr3t-value")
    got = dev_server.cli("secrets", "get", "team/db", "--field", "password")
    assert got.stdout == "s3cr3t-value\n"
    assert json.loads(dev_server.cli("secrets", "list", "team", "--json").stdout) == ["db"]

    # Another address (here: the same server under another name): no dev root token sent.
    other = dev_server.url.replace("127.0.0.1", "localhost")
    elsewhere = run(dev_server, "secrets", "get", "team/db", "--address", other)
    assert_clean_failure(elsewhere, "permission denied")
    # The exact address of this home's server, as `socle secrets env` exports it: sent.
    same = run(dev_server, "secrets", "get", "team/db", "--address", dev_server.url)
    assert same.returncode == 0, same.stderr

    token = root_token(dev_server)
    for log in [dev_server.log, *dev_server.home.rglob("*.log")]:
        assert token not in log.read_text(errors="replace"), f"root token in {log}"


def test_secrets_env_sets_up_vault_clients(dev_server: SocleServer) -> None:
    out = dev_server.cli("secrets", "env").stdout
    exported = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line)
    assert exported["VAULT_ADDR"] == dev_server.url
    client = hvac.Client(url=exported["VAULT_ADDR"], token=exported["VAULT_TOKEN"])
    assert client.is_authenticated()
    # The same in a shell, as `socle up` tells the user.
    shell = subprocess.run(
        ["sh", "-c", f'eval "$({SOCLE} secrets env)" && echo "$VAULT_ADDR"'],
        env=dev_server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shell.stdout.strip() == dev_server.url


def test_operator_init_on_a_dev_home_says_what_to_do(dev_server: SocleServer) -> None:
    result = run(dev_server, "operator", "init")
    assert_clean_failure(result, "already initialised", "development mode", "--no-dev")
    assert result.returncode == 1
    assert root_token(dev_server) not in result.stdout + result.stderr


def test_policy_write_read_list_delete(dev_server: SocleServer, tmp_path: Path) -> None:
    doc = tmp_path / "readers.hcl"
    doc.write_text('path "secret/data/team/*" {\n  capabilities = ["read", "list"]\n}\n')
    dev_server.cli("secrets", "policy", "write", "readers", str(doc))
    assert "readers" in policies(dev_server)
    assert dev_server.cli("secrets", "policy", "read", "readers").stdout == doc.read_text()
    read = json.loads(dev_server.cli("secrets", "policy", "read", "readers", "--json").stdout)
    assert read == {"name": "readers", "policy": doc.read_text()}

    from_stdin = 'path "secret/data/x" { capabilities = ["read"] }'
    written = run(dev_server, "secrets", "policy", "write", "readers", "-", stdin=from_stdin)
    assert written.returncode == 0, written.stderr
    assert dev_server.cli("secrets", "policy", "read", "readers").stdout == from_stdin + "\n"

    dev_server.cli("secrets", "policy", "delete", "readers")
    assert "readers" not in policies(dev_server)
    missing = run(dev_server, "secrets", "policy", "read", "readers")
    assert_clean_failure(missing, "no policy named 'readers'")
    assert_clean_failure(run(dev_server, "secrets", "policy", "delete", "readers"), "no policy")


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ('path "a" {\n  capabilities = ["read"]\n  oops\n}\n', "bad.hcl: line 4"),
        ('path "a" {\n  capabilities = ["reed"]\n}\n', "bad.hcl: line 2"),
        ('path "a" {\n  capabilities = ["read"]\n', "bad.hcl: line"),
        ('storage "raft" {}\n', "bad.hcl: line 1: invalid key 'storage'"),
        ('{"path": {"a": {"capabilities": "read"}}', "bad.hcl: line 1"),
    ],
)
def test_bad_hcl_names_the_file_and_line(
    dev_server: SocleServer, tmp_path: Path, document: str, where: str
) -> None:
    before = policies(dev_server)
    bad = tmp_path / "bad.hcl"
    bad.write_text(document)
    result = run(dev_server, "secrets", "policy", "write", "bad", str(bad), cwd=tmp_path)
    assert_clean_failure(result, where, "nothing was written")
    assert policies(dev_server) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("policy", "write", "Bad Name", "-"), "invalid policy name"),
        (("policy", "write", "p", "/nonexistent/p.hcl"), "cannot read /nonexistent/p.hcl"),
        (("policy", "read", "../sys"), "invalid policy name"),
        (("grant", "ghost", "secret/data/db"), "unknown app 'ghost'"),
        (("grant", "Web_1", "secret/data/db"), "invalid app name"),
        (("grant", "web", "secret/data/db", "--capabilities", "reed"), "unknown capability"),
        (("grant", "web", "secret/data/db", "--capabilities", "deny"), "unknown capability"),
        (("grant", "web", "secret/../sys/seal"), "invalid secret path"),
    ],
)
def test_bad_input_to_the_new_commands(
    dev_server: SocleServer, tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    write_repo(tmp_path / "repo", {"web": {"env": {"X": {"secret": "secret/data/db#k"}}}})
    (dev_server.home / "repository.json").write_text(
        json.dumps({"path": str(tmp_path / "repo"), "env": None})
    )
    before = policies(dev_server)
    assert_clean_failure(run(dev_server, "secrets", *args), needle)
    assert policies(dev_server) == before


def test_missing_policy_error_names_the_manifest_and_the_fix(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    dev_server.cli("secrets", "put", "db", "password=pw-1")
    repo = write_repo(
        tmp_path / "repo", {"web": {"env": {"PW": {"secret": "secret/data/db#password"}}}}
    )
    refused = run(dev_server, "apply", str(repo), "--yes", cwd=tmp_path)
    assert_clean_failure(
        refused, "repo/apps.yaml:", "spec.env.PW", "`socle secrets grant web secret/data/db`"
    )
    assert dev_server.status()["apps"] == []

    command = refused.stderr.split("run `", 1)[1].split("`", 1)[0]
    fixed = run(dev_server, *command.split()[1:])
    assert fixed.returncode == 0, fixed.stderr
    assert "app-web" in policies(dev_server)
    # Granting again (another capability) merges instead of replacing.
    dev_server.cli("secrets", "grant", "web", "secret/db", "--capabilities", "list")
    text = dev_server.cli("secrets", "policy", "read", "app-web").stdout
    assert text.count('path "secret/data/db"') == 1 and '"read", "list"' in text

    dev_server.cli("apply", str(repo), "--yes")
    assert dev_server.app("web")["ready"] >= 1
