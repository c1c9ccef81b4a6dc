"""Signed commits end to end: an environment that lists a GPG key and an SSH signer
applies only commits signed by them; an unsigned and a tampered commit are refused, the
refusal is shown in status and history, and the environment stays on its last good
commit (keys made by real ``gpg`` and ``ssh-keygen``)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.gitops_repo import Remote, web, write_repo
from tests.e2e.socle_fixture import SocleServer
from tests.e2e.test_gitops import source, sync, version
from tests.integration.gitops.test_signed_commits import (
    GpgKey,
    SshKey,
    commit_gpg,
    commit_ssh,
    keys,
    tamper,
)

__all__ = ["keys"]  # the fixture


def test_only_signed_commits_reach_the_environment(
    server: SocleServer, tmp_path: Path, keys: tuple[GpgKey, GpgKey, SshKey, SshKey]
) -> None:
    good_gpg, _, good_ssh, other_ssh = keys
    remote = Remote(tmp_path / "git")
    write_repo(remote.work / "deploy", {"web": web("v1")})
    first = commit_gpg(remote, good_gpg, "release v1")
    (tmp_path / "release.asc").write_text(good_gpg.public)
    (tmp_path / "allowed_signers").write_text(f"# team\n{good_ssh.signer}\n")
    server.cli(
        "source", "add", "platform", "--repo", remote.url, "--branch", "main",
        "--path", "deploy", "--env", "prod", "--interval", "1h",
        "--signing-key", str(tmp_path / "release.asc"),
        "--allowed-signers", str(tmp_path / "allowed_signers"),
    )  # fmt: skip
    code, rows = sync(server, "prod")
    assert code == 0 and rows[0]["state"] == "synced" and rows[0]["commit"]["sha"] == first
    assert version(server, "web") == "v1"

    write_repo(remote.work / "deploy", {"web": web("v2")})
    second = commit_ssh(remote, good_ssh, "release v2")
    code, rows = sync(server, "prod")
    assert code == 0 and rows[0]["commit"]["sha"] == second
    assert version(server, "web") == "v2"

    write_repo(remote.work / "deploy", {"web": web("v3")})
    unsigned = remote.commit("hotfix by hand")
    code, rows = sync(server, "prod")
    assert code == 1
    status = source(server, "platform")
    assert status["state"] == "failed"
    assert f"commit {unsigned[:12]} refused" in status["reason"]
    assert "is not signed" in status["reason"] and f"staying on {second[:12]}" in status["reason"]
    assert version(server, "web") == "v2"

    write_repo(remote.work / "deploy", {"web": web("v4")})
    foreign = commit_ssh(remote, other_ssh, "release v4")
    code, _ = sync(server, "prod")
    assert code == 1
    assert "signed by an SSH key that is not listed" in source(server, "platform")["reason"]

    history = json.loads(server.cli("history", "prod", "--json").stdout)
    refused = {row["commit"]["sha"]: row for row in history if row["status"] == "refused"}
    assert set(refused) >= {unsigned, foreign}
    assert "is not signed" in refused[unsigned]["message"]
    table = server.cli("history", "prod").stdout
    assert "refused" in table and unsigned[:12] in table
    assert version(server, "web") == "v2"

    # a tampered copy of a good commit is refused too; a good signature is applied again
    forged = tamper(remote, first)
    code, _ = sync(server, "prod")
    assert code == 1 and forged != first
    assert "bad signature" in source(server, "platform")["reason"]
    assert good_gpg.public not in json.dumps(history)
