"""The real ``git`` against real remotes: a token-protected HTTP remote (git's "dumb" HTTP
protocol served by a small stdlib server that demands the token), tags, SHAs, deleted
branches, hostile trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from socle.errors import SourceError
from socle.gitops.git import Credentials, Mirror
from tests.e2e.gitops_repo import TOKEN, Remote, git, protected_http


def test_token_reaches_the_remote_only_as_a_header(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "git")
    sha = remote.commit_apps("v1", {"web": {"env": {"VERSION": "v1"}}})
    git(remote.bare, "update-server-info")
    with protected_http(tmp_path / "git") as (url, seen):
        denied = Mirror(tmp_path / "m1", f"{url}/remote.git")
        with pytest.raises(SourceError) as caught:
            denied.fetch()
        assert "git fetch failed" in caught.value.message
        mirror = Mirror(tmp_path / "m2", f"{url}/remote.git", Credentials(token=TOKEN))
        mirror.fetch()
        assert mirror.resolve("main", None) == sha
        assert any(s.startswith("Basic ") for s in seen)
    assert TOKEN not in caught.value.message
    checkout = mirror.checkout(sha, "deploy", tmp_path / "out")
    assert (checkout / "apps.yaml").is_file() and not (checkout / ".git").exists()
    assert mirror.commit(sha).message == "v1"


def test_tags_shas_deleted_branches_and_missing_folders(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "git")
    first = remote.commit_apps("v1", {"web": {}})
    git(remote.work, "tag", "v1.0")
    git(remote.work, "push", "--quiet", "origin", "v1.0")
    remote.commit_apps("v2", {"web": {"replicas": 2}})
    mirror = Mirror(tmp_path / "m", remote.url)
    mirror.fetch()
    assert mirror.resolve(None, "v1.0") == first
    assert mirror.resolve(None, first) == first
    assert mirror.has_folder(first, "deploy") and not mirror.has_folder(first, "nope")
    with pytest.raises(SourceError, match="ref 'v9' does not exist"):
        mirror.resolve(None, "v9")
    git(remote.bare, "branch", "-D", "main")
    mirror.fetch()
    with pytest.raises(SourceError, match="branch 'main' does not exist"):
        mirror.resolve("main", None)
    assert (tmp_path / "m").stat().st_mode & 0o077 == 0


def test_a_link_out_of_the_tree_is_not_followed(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "git")
    (remote.work / "deploy").mkdir(parents=True)
    (remote.work / "deploy" / "escape").symlink_to("/etc")
    (remote.work / "deploy" / "ok.txt").write_text("fine\n")
    sha = remote.commit("links")
    mirror = Mirror(tmp_path / "m", remote.url)
    mirror.fetch()
    with pytest.raises(SourceError, match="cannot be checked out safely"):
        mirror.checkout(sha, "deploy", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_revert_commit_restores_one_folder_and_is_pushed(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "git")
    (remote.work / "other").mkdir(parents=True)
    (remote.work / "other" / "team.txt").write_text("a\n")
    first = remote.commit_apps("v1", {"web": {"env": {"VERSION": "v1"}}})
    (remote.work / "other" / "team.txt").write_text("b\n")
    (remote.work / "deploy" / "extra.yaml").write_text("# added in v2\n")
    second = remote.commit_apps("v2", {"web": {"env": {"VERSION": "v2"}}})
    mirror = Mirror(tmp_path / "m", remote.url)
    mirror.fetch()
    new = mirror.revert_to("main", first, "deploy", "Revert deploy to v1")
    assert git(remote.bare, "rev-parse", "main") == new
    assert git(remote.bare, "rev-parse", f"{new}^") == second
    assert git(remote.bare, "rev-parse", f"{new}:deploy") == git(
        remote.bare, "rev-parse", f"{first}:deploy"
    )
    assert git(remote.bare, "show", f"{new}:other/team.txt") == "b"  # other folders untouched
    assert mirror.commit(new).author == "Socle <socle@localhost>"
    # a push made meanwhile is never overwritten: the revert fails instead
    git(remote.work, "commit", "--quiet", "--allow-empty", "-m", "meanwhile")
    git(remote.work, "pull", "--quiet", "--rebase", "origin", "main")
    git(remote.work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    with pytest.raises(SourceError, match="git push failed"):
        mirror.revert_to("main", first, "deploy", "again")
