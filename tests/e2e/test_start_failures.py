"""Releases that cannot start, through the whole server: every start failure counts.

An instance that can never start (program not found, a NUL byte in an env value or in a
secret) fails its rollout at once with the reason, rolls back to the previous release when
``autoRollback`` is set, and ``socle apply`` exits non-zero saying why; a crash loop rolls
back as soon as it is detected. Deadlines here are long (10 minutes) on purpose: a test
that passes proves the rollout did not wait for them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hvac

from tests.e2e.socle_fixture import SocleServer, get_json, instance_url, wait_for, write_repo

LONG = {"progressDeadlineSeconds": "600s", "autoRollback": True}
SECRET_CANARY = "s3cr3t-canary-51fa"


def v1_then(server: SocleServer, repo: Path, broken: dict[str, Any]) -> str:
    """Apply a good v1, then ``broken`` on top; returns the URL v1 serves on."""
    write_repo(repo, {"web": {"env": {"VERSION": "v1"}, "update": LONG}})
    server.cli("apply", str(repo), "--yes")
    url = instance_url(server.app("web"))
    write_repo(repo, {"web": {"update": LONG, **broken}})
    return url


def assert_rolled_back(server: SocleServer, result: Any, url: str, *reasons: str) -> str:
    """apply exited 1, said why, recorded it, and v1 serves again (alone)."""
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stderr
    assert "rolled_back" in out, out
    for reason in reasons:
        assert reason in out, out
    assert "not ready within" not in out, "the rollout waited for its deadline"
    latest = json.loads(server.cli("history", "--json").stdout)[0]
    assert latest["status"] == "rolled_back"
    message: str = latest["apps"]["web"]["message"]
    assert all(reason in message for reason in reasons), message
    assert "rolled back to release" in message
    wait_for(
        lambda: (
            server.app("web")["health"] == "healthy" and len(server.app("web")["instances"]) == 1
        ),
        60,
        "the rollback to settle",
    )
    assert get_json(url)["version"] == "v1"
    assert get_json(instance_url(server.app("web"))) == get_json(url)
    return message


def test_program_not_found_rolls_back_at_once(server: SocleServer, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    url = v1_then(
        server,
        repo,
        {"env": {"VERSION": "v2"}, "run": {"command": ["./no-such-program"], "workdir": "web"}},
    )
    result = server.cli("apply", str(repo), "--yes", check=False)
    assert_rolled_back(server, result, url, "no-such-program", "cannot start")


def test_nul_byte_in_an_env_value_never_runs(server: SocleServer, tmp_path: Path) -> None:
    """Refused at validate time or failed at once at start: never retried, never served."""
    repo = tmp_path / "repo"
    url = v1_then(server, repo, {"env": {"VERSION": "v2", "BAD": "a\0b"}})
    result = server.cli("apply", str(repo), "--yes", check=False)
    assert result.returncode == 1, result.stdout
    assert "NUL" in result.stderr and "BAD" in result.stderr, result.stderr
    assert "not ready within" not in result.stderr
    wait_for(lambda: len(server.app("web")["instances"]) == 1, 60, "one instance left")
    assert get_json(url)["version"] == "v1"


def test_nul_byte_in_a_secret_rolls_back_and_is_never_shown(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    keys = json.loads((dev_server.home / "secrets-dev-unseal.key").read_text())
    client = hvac.Client(url=dev_server.url, token=keys["root_token"])
    client.secrets.kv.v2.create_or_update_secret(
        "db", secret={"password": f"{SECRET_CANARY}\0tail"}, mount_point="secret"
    )
    client.sys.create_or_update_policy(
        "app-web", 'path "secret/data/db" { capabilities = ["read"] }'
    )
    repo = tmp_path / "repo"
    url = v1_then(
        dev_server,
        repo,
        {"env": {"VERSION": "v2", "DB_PASSWORD": {"secret": "secret/data/db#password"}}},
    )
    result = dev_server.cli("apply", str(repo), "--yes", check=False)
    message = assert_rolled_back(
        dev_server,
        result,
        url,
        "secret value of environment variable DB_PASSWORD holds a NUL byte",
    )
    assert SECRET_CANARY not in result.stderr + result.stdout + message
    assert SECRET_CANARY not in json.dumps(dev_server.status())


def test_crash_loop_rolls_back_before_the_deadline(server: SocleServer, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    url = v1_then(server, repo, {"env": {"VERSION": "v2", "CRASH": "1"}})
    result = server.cli("apply", str(repo), "--yes", check=False, timeout=300)
    assert_rolled_back(server, result, url, "crash loop", "crashing on purpose")


def test_first_release_that_cannot_start_fails_with_the_reason(
    server: SocleServer, tmp_path: Path
) -> None:
    """Nothing to roll back to: the revision fails at once and the app says why."""
    repo = write_repo(
        tmp_path / "repo",
        {"web": {"run": {"command": [f"{sys.executable}-missing"], "workdir": "web"}}},
    )
    result = server.cli("apply", str(repo), "--yes", check=False)
    assert result.returncode == 1
    assert "failed" in result.stderr and "not found" in result.stderr, result.stderr
    app = server.app("web")
    assert app["health"] == "failed" and "not found" in app["message"]
    assert [i["state"] for i in app["instances"]] == ["failed"]
