"""A sync of an unchanged remote does not fetch (one ``git ls-remote``), and a new commit,
a force-push and a deleted branch are still seen exactly as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.gitops_repo import Remote, git
from tests.e2e.socle_fixture import SocleServer


def sync(server: SocleServer, env: str) -> dict[str, Any]:
    result = server.cli("sync", env, "--json", check=False, timeout=300)
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows[0]


def test_unchanged_remote_is_not_fetched_again(server: SocleServer, tmp_path: Path) -> None:
    remote = Remote(tmp_path / "git")
    first = remote.commit_apps("v1", {"web": {"replicas": 0}})
    server.cli(
        "source", "add", "quiet", "--repo", remote.url, "--branch", "main",
        "--path", "deploy", "--env", "dev", "--interval", "1h",
    )  # fmt: skip
    row = sync(server, "dev")
    assert row["state"] == "synced" and row["commit"]["sha"] == first, row
    fetched = server.home / "gitops" / "quiet" / "mirror" / "FETCH_HEAD"
    stamp = fetched.stat().st_mtime_ns
    row = sync(server, "dev")
    assert row["state"] == "synced" and row["commit"]["sha"] == first, row
    assert fetched.stat().st_mtime_ns == stamp, "an unchanged remote was fetched again"

    second = remote.commit_apps("v2", {"web": {"replicas": 0, "env": {"V": "2"}}})
    row = sync(server, "dev")
    assert row["state"] == "synced" and row["commit"]["sha"] == second, row
    assert fetched.stat().st_mtime_ns != stamp

    git(remote.work, "reset", "--quiet", "--hard", first)  # force-push back to v1
    git(remote.work, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")
    row = sync(server, "dev")
    assert row["state"] == "synced" and row["commit"]["sha"] == first, row

    git(remote.bare, "branch", "-D", "main")
    row = sync(server, "dev")
    assert row["state"] == "failed" and "branch 'main' does not exist" in row["reason"], row
    assert row["commit"]["sha"] == first
