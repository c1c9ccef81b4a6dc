"""``Mirror.remote_sha``: what the remote's branch or tag names now, from one real
``git ls-remote``, and None whenever a fetch must decide (so errors keep their reasons)."""

from __future__ import annotations

from pathlib import Path

from socle.gitops.git import Mirror
from tests.e2e.gitops_repo import Remote, git


def test_branch_moves_are_seen_without_fetching(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "git")
    first = remote.commit_apps("v1", {"web": {}})
    mirror = Mirror(tmp_path / "m", remote.url)
    assert mirror.remote_sha("main", None) is None  # no mirror yet: fetch first
    mirror.fetch()
    assert mirror.remote_sha("main", None) == first
    second = remote.commit_apps("v2", {"web": {"replicas": 2}})
    assert mirror.remote_sha("main", None) == second
    assert mirror.resolve("main", None) == first  # nothing was fetched
    # Only the exact ref counts: a branch whose name ends like the followed one does not.
    git(remote.work, "push", "--quiet", "origin", f"{first}:refs/heads/x/refs/heads/main")
    assert mirror.remote_sha("main", None) == second
    git(remote.bare, "branch", "-D", "main")
    assert mirror.remote_sha("main", None) is None  # deleted: the fetch says why
    assert mirror.remote_sha("other", None) is None


def test_tags_are_peeled_and_shas_or_dead_remotes_say_nothing(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "git")
    first = remote.commit_apps("v1", {"web": {}})
    git(remote.work, "tag", "light")
    git(remote.work, "tag", "-a", "annotated", "-m", "release")
    git(remote.work, "push", "--quiet", "origin", "light", "annotated")
    mirror = Mirror(tmp_path / "m", remote.url)
    mirror.fetch()
    assert mirror.remote_sha(None, "light") == first
    assert mirror.remote_sha(None, "annotated") == first == mirror.resolve(None, "annotated")
    assert mirror.remote_sha(None, first) is None
    assert mirror.remote_sha(None, "missing") is None
    gone = Mirror(tmp_path / "m", f"file://{tmp_path / 'nowhere.git'}")
    assert gone.remote_sha("main", None) is None
