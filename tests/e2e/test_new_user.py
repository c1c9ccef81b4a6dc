"""What a new user tripped on: apply without PATH, -e everywhere, URLs, wide tables, up."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.socle_fixture import SOCLE, SocleServer, write_repo


def _overlay(repo: Path) -> None:
    (repo / "environments" / "dev").mkdir(parents=True)
    (repo / "environments" / "dev" / "web.yaml").write_text(
        "apiVersion: socle/v1\nkind: App\nmetadata: {name: web}\nspec:\n  replicas: 2\n"
    )


def test_apply_and_plan_without_path_reuse_the_last_repository(
    server: SocleServer, tmp_path: Path
) -> None:
    refused = server.cli("apply", "--yes", check=False)
    assert refused.returncode == 1 and "no PATH given" in refused.stderr
    repo = write_repo(tmp_path / "repo", {"web": {}})
    _overlay(repo)
    for command in ("validate", "render", "plan"):
        assert server.cli(command, str(repo), "-e", "dev", check=False).returncode in (0, 2)
    server.cli("apply", str(repo), "-e", "dev", "--yes")
    assert server.app("web")["desired"] == 2

    again = server.cli("apply", "--yes")  # same repository, same environment
    assert "No changes" in again.stdout and str(repo) in again.stderr and "env dev" in again.stderr
    planned = server.cli("plan", check=False)
    assert planned.returncode == 0
    assert (server.home / "repository.json").stat().st_mode & 0o777 == 0o600


def test_status_prints_urls_and_does_not_wrap_without_a_terminal(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"a-rather-long-application-name": {"replicas": 2}})
    server.cli("apply", str(repo), "--yes")
    out = server.cli("status").stdout
    app = server.app("a-rather-long-application-name")
    for inst in app["instances"]:
        assert f"http={inst['address']}:{inst['ports']['http']}" in out  # never split
    # The stable URL through the ingress, not an instance's port (which every rollout changes).
    assert re.search(
        r"answers at http://a-rather-long-application-name\.default\.localhost:\d+/", out
    )
    assert all(len(line) <= 400 for line in out.splitlines())


@pytest.mark.parametrize("with_apps", [False, True])
def test_up_without_path_waits_or_says_nothing_is_applied(
    server: SocleServer, tmp_path: Path, with_apps: bool
) -> None:
    if with_apps:
        repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2}})
        server.cli("apply", str(repo), "--yes")
        server.stop(keep_apps=True)
        server.start()  # re-adopts the running instances
    result = subprocess.run(
        [SOCLE, "up"], env=server.env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    if with_apps:
        assert "degraded" not in result.stdout and "progressing" not in result.stdout
        assert server.app("web")["ready"] == 2
    else:
        assert "Nothing is applied yet" in result.stdout
