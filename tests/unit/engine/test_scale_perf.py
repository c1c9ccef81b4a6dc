"""What keeps planning and applying proportional to the change, tested for behaviour, not
for time: the planner-state cache, the controller's dependents index, Target reuse of a
known app, throttled revision writes during builds, and releases without build steps."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from socle.engine import service
from socle.engine.controller import Controller
from socle.engine.releases import ReleaseStore
from socle.engine.service import Engine
from socle.engine.targets import AppStateCache, Rollout, Target, app_state
from socle.model.app import App
from socle.state.sqlite import SqliteStore
from socle.state.store import Put
from tests.unit.engine.memdriver import MemDriver


def make_app(name: str, **spec: Any) -> App:
    body: dict[str, Any] = {"run": {"command": ["python3", "app.py"], "workdir": "web"}, **spec}
    return App.model_validate(
        {"apiVersion": "socle/v1", "kind": "App", "metadata": {"name": name}, "spec": body}
    )


def make_target(name: str, **spec: Any) -> Target:
    return Target(app_state(make_app(name, **spec), "r1"), Path("/x"), Rollout(1, time.time()))


def write_repo(root: Path, count: int, *, replicas: int = 0) -> Path:
    (root / "web").mkdir(parents=True, exist_ok=True)
    (root / "web" / "app.py").write_text("print('hi')\n")
    docs = [
        f"apiVersion: socle/v1\nkind: App\nmetadata: {{name: app{i:03d}}}\n"
        f"spec:\n  replicas: {replicas}\n  run: {{command: [python3, app.py], workdir: web}}\n"
        for i in range(count)
    ]
    (root / "apps.yaml").write_text("---\n".join(docs))
    return root


# -- planner states ---------------------------------------------------------------------


def test_state_cache_gives_what_app_state_gives_once_per_input() -> None:
    cache = AppStateCache()
    api = make_app("api", env={"A": "1"})
    first = cache.state(api, "r1")
    assert first == app_state(api, "r1")
    assert cache.state(api, "r1") is first
    assert cache.state(api, "r2") == app_state(api, "r2")
    with_secret = cache.state(api, "r1", {"kv/db#pw": 3})
    assert with_secret == app_state(api, "r1", {"kv/db#pw": 3})
    assert with_secret.template != first.template
    assert cache.state(api, "r1", {"kv/db#pw": 4}).template != with_secret.template
    # An equal but distinct object is another key: identity is what proves "unchanged".
    assert cache.state(make_app("api", env={"A": "1"}), "r1") == first
    assert (cache.hits, cache.misses) == (1, 5)


def test_state_cache_forgets_what_recent_passes_did_not_ask_for() -> None:
    cache = AppStateCache(keep_passes=2)
    old, kept = make_app("old"), make_app("kept")
    cache.state(old, "r1")
    for _ in range(3):
        cache.state(kept, "r1")
        cache.end_pass()
    assert len(cache) == 1
    before = cache.misses
    cache.state(kept, "r1")
    assert cache.misses == before


# -- controller -------------------------------------------------------------------------


async def test_dependents_follow_each_target_change() -> None:
    controller = Controller(MemDriver(), lambda *_: None)
    controller.set_targets(
        {
            "db": make_target("db"),
            "api": make_target("api", dependsOn=["db"]),
            "web": make_target("web", dependsOn=["api", "db"]),
        }
    )
    assert controller.dependents("db") == {"api", "web"}
    assert controller.dependents("api") == {"web"}
    controller.set_target("web", make_target("web", dependsOn=["api"]))
    assert controller.dependents("db") == {"api"}
    controller.set_target("api", None)
    assert controller.dependents("db") == set() and controller.dependents("api") == {"web"}
    controller.set_targets({"web": None})
    assert controller.dependents("api") == set()
    assert set(controller.targets()) == {"db"}


def test_target_reuses_a_known_app_and_validates_otherwise() -> None:
    app = make_app("api", replicas=2)
    state = app_state(app, "r1")
    assert Target(state, Path("/x"), Rollout(1, 0.0), known_app=app).app is app
    other = Target(state, Path("/x"), Rollout(1, 0.0), known_app=make_app("web"))
    assert other.app is not app and other.app == app
    assert Target.from_json(other.to_json()).app == app


# -- engine -----------------------------------------------------------------------------


class CountingStore(SqliteStore):
    """The real SQLite store, remembering every write of a revision record."""

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(path, **options)
        self.revision_writes: list[dict[str, Any]] = []

    async def commit(self, ops: Any) -> None:
        for op in ops:
            if isinstance(op, Put) and op.key.startswith("revisions/"):
                self.revision_writes.append(json.loads(op.value))
        await super().commit(ops)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[Engine, CountingStore]]:
    store = await CountingStore.open(tmp_path / "state.db")
    assert isinstance(store, CountingStore)
    releases = ReleaseStore(tmp_path / "releases")
    the_engine = Engine(store, MemDriver(), releases)
    await the_engine.start()
    yield the_engine, store
    await the_engine.stop()
    await releases.close()
    await store.close()


async def wait_done(engine: Engine, number: int) -> str:
    for _ in range(1000):
        revision = await engine.revisions.get(number)
        if revision.done:
            return revision.status
        await asyncio.sleep(0.01)
    raise AssertionError("revision did not finish")


async def test_plan_again_reuses_loaded_objects_and_states(
    engine: tuple[Engine, CountingStore], tmp_path: Path
) -> None:
    the_engine, _ = engine
    repo = write_repo(tmp_path / "repo", 20)
    the_engine.manifest_cache.racy_ns = 0
    first, desired = await the_engine.desired_from(repo, None)
    misses = the_engine.state_cache.misses
    again, desired_again = await the_engine.desired_from(repo, None)
    assert the_engine.manifest_cache.stats.validated == 0
    assert the_engine.state_cache.misses == misses
    assert all(desired_again.states[n] is desired.states[n] for n in desired.states)
    assert again.digest() == first.digest()


async def test_build_progress_is_not_written_per_app(
    engine: tuple[Engine, CountingStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "PROGRESS_SAVE_SECONDS", 3600.0)
    the_engine, store = engine
    repo = write_repo(tmp_path / "repo", 30)
    _, revision = await the_engine.apply(repo, None, "test")
    assert revision is not None
    assert await wait_done(the_engine, revision.number) == "succeeded"
    phases = [{entry["phase"] for entry in w["apps"].values()} for w in store.revision_writes]
    assert phases.count({"building"}) == 1
    assert not any("built" in p for p in phases), "no progress write within the interval"
    target = the_engine.controller.target("app007")
    assert target is not None and (target.release_root / "app.py").is_file()
    assert the_engine._releases.get("app007", target.state.release) is not None


# -- releases without build steps -------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "repo", 1)


@pytest.fixture
async def releases(tmp_path: Path) -> AsyncIterator[ReleaseStore]:
    store = ReleaseStore(tmp_path / "releases")
    yield store
    await store.close()


async def test_copy_release_is_complete_and_logged(releases: ReleaseStore, repo: Path) -> None:
    app = make_app("api")
    lines: list[str] = []
    release = await releases.ensure(repo, app, on_output=lines.append)
    assert release.root == releases.releases_dir / "api" / release.id
    assert (release.root / "app.py").read_text() == "print('hi')\n"
    assert releases.get("api", release.id) == release
    log = (releases.releases_dir / "api" / f"{release.id}.build.log").read_text()
    assert log.splitlines() == lines and "ready" in lines[-1]
    assert await releases.ensure(repo, app) == release


async def test_many_apps_get_one_release_folder_each(releases: ReleaseStore, repo: Path) -> None:
    apps = [make_app(f"a{i:02d}") for i in range(40)]
    with releases.batch():
        built = await asyncio.gather(*(releases.ensure(repo, a) for a in apps))
    assert len({r.id for r in built}) == 1, "same files, same id"
    assert len({r.root for r in built}) == 40, "but every app owns its folder"
    assert all((r.root / "app.py").is_file() for r in built)


async def test_cancelled_copy_leaves_nothing(
    releases: ReleaseStore, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its thread copies: the thread ends, then its release is removed."""
    app = make_app("api")
    copying = threading.Event()
    copy = releases._copy

    def slow_copy(*args: Any) -> float:
        copying.set()
        time.sleep(0.3)
        return copy(*args)

    monkeypatch.setattr(releases, "_copy", slow_copy)
    task = asyncio.create_task(releases.ensure(repo, app))
    while not copying.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The build task tears down after its last waiter left (thread first, then cleanup).
    while len(asyncio.all_tasks()) > 1:
        await asyncio.sleep(0.01)
    release_id = releases.compute_id(repo, app)
    assert "ready" in (releases.releases_dir / "api" / f"{release_id}.build.log").read_text()
    assert not (releases.releases_dir / "api" / release_id).exists()
    monkeypatch.undo()
    release = await releases.ensure(repo, app)
    assert releases.get("api", release.id) == release


async def test_copy_waits_for_a_lock_held_elsewhere(releases: ReleaseStore, repo: Path) -> None:
    app = make_app("api")
    release_id = releases.compute_id(repo, app)
    app_dir = releases.releases_dir / "api"
    app_dir.mkdir(parents=True)
    fd = os.open(app_dir / f"{release_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    task = asyncio.create_task(releases.ensure(repo, app))
    await asyncio.sleep(0.2)
    assert not task.done() and not (app_dir / release_id).exists()
    os.close(fd)
    release = await asyncio.wait_for(task, 30)
    assert (release.root / "app.py").is_file()
