"""Disaster recovery from Git: a control plane whose environments follow Git is backed
up, its home destroyed, and `socle up --bootstrap FILE --restore BACKUP` on a fresh home
rebuilds every environment to the last synced commits: same source states and commits,
same app answers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.gitops_repo import Remote, git, web
from tests.e2e.socle_fixture import SOCLE, SocleServer, get_json, instance_url, processes_under
from tests.e2e.test_gitops import sync


def sources(server: SocleServer) -> dict[str, tuple[str, str, str]]:
    rows = json.loads(server.cli("source", "list", "--json").stdout)
    return {
        r["name"]: (r["env"], r["status"]["state"], (r["status"]["commit"] or {}).get("sha", ""))
        for r in rows
    }


def answers(server: SocleServer) -> dict[str, Any]:
    """What the app answers in each environment."""
    return {a["environment"]: get_json(instance_url(a))["version"] for a in server.status()["apps"]}


@pytest.mark.timeout(600)
def test_a_destroyed_home_is_rebuilt_from_git_and_a_backup(
    server: SocleServer, tmp_path: Path
) -> None:
    remote = Remote(tmp_path / "git")
    remote.commit_apps("v1", {"web": web("v1")})
    git(remote.work, "tag", "v1")
    git(remote.work, "push", "--quiet", "origin", "v1")
    remote.commit_apps("v2", {"web": web("v2")})
    (tmp_path / "bootstrap").mkdir()
    bootstrap = tmp_path / "bootstrap" / "sources.yaml"
    bootstrap.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "socle/v1",
                    "kind": "Source",
                    "metadata": {"name": name},
                    "spec": {
                        "repo": remote.url,
                        "path": "deploy",
                        "env": env,
                        "interval": "1h",
                        "prune": True,
                        **ref,
                    },
                }
                for name, env, ref in (
                    ("platform-dev", "dev", {"branch": "main"}),
                    ("platform-prod", "prod", {"ref": "v1"}),
                )
            ]
        )
    )
    server.cli("source", "apply", str(bootstrap.parent))
    for env in ("dev", "prod"):
        code, rows = sync(server, env)
        assert code == 0, rows
    before_sources = sources(server)
    before_answers = answers(server)
    assert before_answers == {"dev": "v2", "prod": "v1"}
    archive = tmp_path / "backups" / "home.tar"
    server.cli("backup", "create", str(archive))

    server.cleanup()  # the disaster: the control plane and its home are gone
    shutil.rmtree(server.home)

    env = dict(server.env, SOCLE_HOME=str(tmp_path / "fresh"))
    rebuilt = SocleServer(home=tmp_path / "fresh", env=env)
    try:
        up = subprocess.run(
            [SOCLE, "up", "--no-dev", "--listen", "127.0.0.1:0", "--bootstrap", str(bootstrap),
             "--restore", str(archive)],
            env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if up.returncode != 0:
            log = (rebuilt.home / "server.log").read_text()[-4000:]
            status = subprocess.run([SOCLE, "status", "--json"], env=env, capture_output=True,
                                    text=True, check=False).stdout  # fmt: skip
            raise AssertionError(up.stdout + up.stderr + status + log)
        assert "restored home.tar" in up.stdout and "2 source(s)" in up.stdout
        info = json.loads((rebuilt.home / "server.json").read_text())
        rebuilt.url = info["url"]
        rebuilt.token = (rebuilt.home / "admin.token").read_text().strip()
        assert sources(rebuilt) == before_sources
        assert answers(rebuilt) == before_answers
        again = rebuilt.cli("up", "--bootstrap", str(bootstrap), "--restore", str(archive),
                            check=False)  # fmt: skip
        assert again.returncode != 0 and "fresh home" in again.stderr
    finally:
        rebuilt.cli("down", check=False)
        for pid in processes_under(rebuilt.home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        rebuilt.cleanup()


def test_rollback_revert_writes_a_commit_to_the_branch(server: SocleServer, tmp_path: Path) -> None:
    remote = Remote(tmp_path / "git")
    first = remote.commit_apps("v1", {"web": web("v1")})
    server.cli(
        "source", "add", "platform", "--repo", remote.url, "--branch", "main",
        "--path", "deploy", "--env", "dev", "--interval", "1h",
    )  # fmt: skip
    assert sync(server, "dev")[0] == 0
    second = remote.commit_apps("v2", {"web": web("v2")})
    assert sync(server, "dev")[0] == 0 and answers(server) == {"dev": "v2"}

    result = server.cli("rollback", "dev", "--revert", "--json", timeout=300)
    data = json.loads(result.stdout)
    new = data["revert"]["sha"]
    assert data["revert"]["to"] == first and data["status"]["state"] == "synced"
    assert git(remote.bare, "rev-parse", "main") == new  # Git stays the truth
    assert git(remote.bare, "rev-parse", f"{new}^") == second
    assert "Revert deploy to" in git(remote.bare, "log", "-1", "--format=%s", new)
    assert answers(server) == {"dev": "v1"}
    status = json.loads(server.cli("source", "show", "platform", "--json").stdout)["status"]
    assert status["commit"]["sha"] == new and status["state"] == "synced"  # not pinned
    events = server.api("GET", "/api/v1/gitops/events").json()
    assert any(e["event"] == "rollback" and new[:12] in e["message"] for e in events)
    pinned = server.cli("rollback", "dev", "--revert", "99", check=False)
    assert pinned.returncode != 0 and "not a good revision" in pinned.stderr
