"""A poll that finds nothing new neither fetches nor writes the source's status to the
store; a poll that finds something (here: a deleted branch) writes it at once. Real ``git``,
the in-memory state store, the GitOps service itself (an unchanged poll never reaches the
engine, so none is given)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from socle.engine.service import Engine
from socle.gitops import service as gitops_service
from socle.gitops.service import STATUS, GitOps, SourceStatus, SyncState
from socle.model.source import Source
from socle.state.memory import MemoryData, MemoryStore
from tests.e2e.gitops_repo import Remote, git


def polls(tmp_path: Path, rounds: int) -> tuple[list[int], list[dict[str, Any]]]:
    remote = Remote(tmp_path / "git")
    sha = remote.commit_apps("v1", {"web": {}})
    source = Source.model_validate(
        {"apiVersion": "socle/v1", "kind": "Source", "metadata": {"name": "s"},
         "spec": {"repo": remote.url, "branch": "main", "path": "deploy", "env": "dev"}}
    )  # fmt: skip
    store = MemoryStore(MemoryData())
    gitops = GitOps(store, cast(Engine, None), tmp_path / "home")
    gitops._sources["s"] = source
    commit = {"sha": sha, "author": "a", "date": "d", "message": "v1"}
    gitops._status["s"] = SourceStatus(SyncState.SYNCED, commit=commit, seen=sha, revision=1)

    async def run() -> tuple[list[int], list[dict[str, Any]]]:
        versions, states = [], []
        for n in range(rounds):
            if n == rounds - 1:
                git(remote.bare, "branch", "-D", "main")
            status = await gitops.sync("s", trigger="poll")
            states.append(status.to_dict())
            record = await store.get(STATUS + "s")
            assert record is not None
            versions.append(record.version)
        return versions, states

    return asyncio.run(run())


def test_unchanged_polls_write_nothing(tmp_path: Path) -> None:
    versions, states = polls(tmp_path, 4)
    assert versions[0] == versions[1] == versions[2] < versions[3]
    assert [s["state"] for s in states] == ["synced"] * 3 + ["failed"]
    assert states[0]["last_sync"] < states[1]["last_sync"] < states[2]["last_sync"]
    assert "branch 'main' does not exist" in states[3]["reason"]


def test_an_old_status_is_written_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gitops_service, "STATUS_REFRESH_SECONDS", 0.0)
    versions, _ = polls(tmp_path, 3)
    assert versions[0] < versions[1] < versions[2]
