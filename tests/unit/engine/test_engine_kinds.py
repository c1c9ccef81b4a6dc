"""The engine with two kinds: cross-kind order, mounts, deletes, compare-and-swap, refusal
of deleting everything. A real SQLite store, the in-memory driver and a temp-dir volume
provider (our own interfaces' small real implementations)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from socle.engine.releases import ReleaseStore
from socle.engine.revisions import RevisionLog
from socle.engine.scopes import path_owner
from socle.engine.service import Engine
from socle.errors import ConflictError, DeleteAllRefused
from socle.runtime.driver import Mount
from socle.state.sqlite import SqliteStore
from tests.unit.engine.memdriver import MemDriver
from tests.unit.engine.memvolumes import DirVolumes

APP = """\
apiVersion: socle/v1
kind: App
metadata: {{name: {name}}}
spec:
  replicas: 1
  run: {{command: [python3, app.py], workdir: web}}
"""
VOLUME = """\
apiVersion: socle/v1
kind: Volume
metadata: {{name: {name}}}
spec: {{size: {size}, retain: {retain}}}
"""


def app(name: str, extra: str = "") -> str:
    return APP.format(name=name) + textwrap.indent(textwrap.dedent(extra), "  ")


def volume(name: str, size: str = "1Gi", retain: str = "true") -> str:
    return VOLUME.format(name=name, size=size, retain=retain)


def write(repo: Path, *docs: str) -> Path:
    (repo / "web").mkdir(parents=True, exist_ok=True)
    (repo / "web" / "app.py").write_text("print('hi')\n")
    for old in repo.glob("*.yaml"):
        old.unlink()
    (repo / "all.yaml").write_text("---\n".join(docs))
    return repo


BASE = (
    app("db", "volumes:\n- {name: data, mountPath: /data}\n"),
    app("api", "dependsOn: [db, Volume/cache]\n"),
    volume("data"),
    volume("cache", "10Mi", "false"),
)


class Parts:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.driver = MemDriver()
        self.volumes = DirVolumes(tmp / "volumes")
        self.journal: list[str] = []
        ensure = self.volumes.ensure
        release = self.volumes.release

        async def logged_ensure(name: str, size: int) -> Any:
            self.journal.append(f"ensure {name}")
            return await ensure(name, size)

        async def logged_release(name: str, *, purge: bool) -> None:
            self.journal.append(f"release {name}")
            await release(name, purge=purge)

        self.volumes.ensure = logged_ensure  # type: ignore[method-assign]
        self.volumes.release = logged_release  # type: ignore[method-assign]

    async def engine(self, store: SqliteStore) -> Engine:
        releases = ReleaseStore(self.tmp / "releases")
        engine = Engine(store, self.driver, releases, volumes=self.volumes)
        await engine.start()
        return engine


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Engine, Parts, SqliteStore]]:
    store = await SqliteStore.open(tmp_path / "state.db")
    assert isinstance(store, SqliteStore)
    parts = Parts(tmp_path)
    engine = await parts.engine(store)
    yield engine, parts, store
    await engine.stop()
    await store.close()


async def settle(engine: Engine, driver: MemDriver, number: int) -> str:
    """Make every started instance ready until the revision is done."""
    for _ in range(2000):
        for instance in list(driver.live.values()):
            if not instance.ready:
                driver.make_ready(instance.id)
        revision = await engine.revisions.get(number)
        if revision.done:
            return revision.status
        await asyncio.sleep(0.01)
    raise AssertionError("revision did not finish")


async def apply(engine: Engine, parts: Parts, repo: Path, **kw: Any) -> tuple[Any, str]:
    the_plan, revision = await engine.apply(repo, None, "test", **kw)
    assert revision is not None
    status = await settle(engine, parts.driver, revision.number)
    return the_plan, status


def actions(the_plan: Any) -> list[str]:
    return [f"{c.action.value} {c.label}" for c in the_plan.changes]


async def test_two_kinds_applied_together_in_dependency_order(
    setup: tuple[Engine, Parts, SqliteStore], tmp_path: Path
) -> None:
    engine, parts, store = setup
    the_plan, status = await apply(engine, parts, write(tmp_path / "repo", *BASE))
    assert status == "succeeded"
    assert actions(the_plan) == [
        "create Volume/cache",
        "create Volume/data",
        "create db",
        "create api",
    ]
    # Volumes exist before any instance starts.
    assert parts.journal == ["ensure cache", "ensure data"]
    (db,) = [s for s in parts.driver.specs.values() if s.app == "db"]
    assert db.mounts == [Mount(tmp_path / "volumes" / "data", "/data", False)]
    (api,) = [s for s in parts.driver.specs.values() if s.app == "api"]
    assert api.mounts == []
    # Stored by (kind, name), and the revision records both kinds.
    keys = await store.keys("objects/")
    assert keys == [
        "objects/App/api",
        "objects/App/db",
        "objects/Volume/cache",
        "objects/Volume/data",
    ]
    assert await store.keys("apps/") == []
    desired = await engine.revisions.desired(1)
    assert sorted(desired["objects"]) == ["App", "Volume"]
    revision = await engine.revisions.get(1)
    assert revision.apps["Volume/data"]["phase"] == "ready"
    assert revision.apps["db"]["phase"] == "ready"
    rows = {(r["kind"], r["name"]): r for r in await engine.status()}
    assert rows[("Volume", "data")]["health"] == "warning"  # not enforced by this provider
    assert rows[("App", "db")]["volumes"] == [
        {"name": "data", "mountPath": "/data", "readOnly": False}
    ]
    # Nothing to do the second time.
    _, again = await engine.plan(tmp_path / "repo", None)
    assert again.empty and again.unchanged == 4


async def test_resizing_a_volume_restarts_no_app(
    setup: tuple[Engine, Parts, SqliteStore], tmp_path: Path
) -> None:
    engine, parts, _ = setup
    repo = write(tmp_path / "repo", *BASE)
    await apply(engine, parts, repo)
    started = list(parts.driver.started)
    write(repo, *BASE[:2], volume("data", "2Gi"), BASE[3])
    the_plan, status = await apply(engine, parts, repo)
    assert (actions(the_plan), status) == (["update Volume/data"], "succeeded")
    assert parts.driver.started == started and parts.driver.stopped == []
    assert parts.volumes.sizes["data"] == 2 * 1024**3


async def test_deletes_go_dependents_first_and_keep_retained_data(
    setup: tuple[Engine, Parts, SqliteStore], tmp_path: Path
) -> None:
    engine, parts, store = setup
    repo = write(tmp_path / "repo", *BASE)
    await apply(engine, parts, repo)
    (tmp_path / "volumes" / "data" / "notes.db").write_text("precious")
    write(repo, app("web"))
    the_plan, status = await apply(engine, parts, repo)
    assert status == "succeeded", (await engine.revisions.get(2)).apps
    assert actions(the_plan) == [
        "create web",
        "delete api",
        "delete db",
        "delete Volume/data",
        "delete Volume/cache",
    ]
    # The volumes were released only after the apps that used them had stopped.
    stops = [i for kind, i in parts.driver.journal if kind == "stop"]
    assert {i.split("-")[0] for i in stops} == {"api", "db"}
    assert parts.journal[-2:] == ["release data", "release cache"] or parts.journal[-2:] == [
        "release cache",
        "release data",
    ]
    assert ("retain", "data") in parts.volumes.calls and ("purge", "cache") in parts.volumes.calls
    assert (tmp_path / "volumes" / "data" / "notes.db").read_text() == "precious"
    assert not (tmp_path / "volumes" / "cache").exists()
    assert await store.keys("objects/Volume/") == []
    revision = await engine.revisions.get(2)
    assert revision.apps["Volume/data"] == {
        "phase": "deleted",
        "message": "data retained until `socle volume delete --purge`",
    }


async def test_empty_folder_is_refused_and_changes_nothing(
    setup: tuple[Engine, Parts, SqliteStore], tmp_path: Path
) -> None:
    engine, parts, store = setup
    repo = write(tmp_path / "repo", *BASE)
    await apply(engine, parts, repo)
    before = {r.key: r.version for r in await store.scan("")}
    empty = repo
    (repo / "all.yaml").unlink()
    with pytest.raises(DeleteAllRefused):
        await engine.plan(empty, None)
    with pytest.raises(DeleteAllRefused):
        await engine.apply(empty, None, "test")
    assert {r.key: r.version for r in await store.scan("")} == before
    the_plan, status = await apply(engine, parts, empty, allow_delete_all=True)
    assert status == "succeeded" and len(the_plan.changes) == 4


async def test_two_writers_never_overwrite_each_other(
    setup: tuple[Engine, Parts, SqliteStore], tmp_path: Path
) -> None:
    """A second engine on the same store (stale view) loses the race with ConflictError,
    reads the targets again, and its next apply starts from what the first one wrote."""
    first, parts, store = setup
    second = await Parts(tmp_path / "b").engine(store)
    try:
        repo = write(tmp_path / "repo", *BASE)
        await apply(first, parts, repo)
        other = write(tmp_path / "other", *BASE[:3], volume("cache", "20Mi", "false"))
        # Another copy of the same source (owner), as a second control plane would see it.
        same = {"owner": path_owner(repo.resolve())}
        _, revision = await second.apply(other, None, "second", **same)
        assert revision is not None
        for _ in range(500):
            found = await second.revisions.get(revision.number)
            if found.done:
                break
            await asyncio.sleep(0.01)
        assert found.status == "failed"
        assert "another writer changed the targets" in found.message
        stored = json.loads((await store.get("objects/Volume/cache")).value)  # type: ignore[union-attr]
        assert stored["state"]["manifest"]["spec"]["size"] == 10 * 1024**2, "not overwritten"
        # Fresh now: the same change plans as one update on top of the first writer's state.
        _, again = await second.plan(other, None, **same)
        assert [f"{c.action.value} {c.label}" for c in again.changes] == ["update Volume/cache"]
        # The first writer deletes api; the second, stale again, loses again and then also
        # forgets api (a target the winner removed is no target any more).
        await apply(first, parts, write(repo, BASE[0], BASE[2], BASE[3]))
        assert "api" in second.controller.targets()
        _, revision = await second.apply(other, None, "second", **same)
        assert revision is not None
        for _ in range(500):
            if (await second.revisions.get(revision.number)).done:
                break
            await asyncio.sleep(0.01)
        assert "api" not in second.controller.targets()
        assert "db" in second.controller.targets()
    finally:
        await second.stop()


async def test_revision_writes_are_compare_and_swap(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        one, two = RevisionLog(store), RevisionLog(store)
        created = await one.create(
            {"who": "a", "source": "s", "env": None, "digest": "", "plan": {}}, {"objects": {}}
        )
        mine, theirs = await one.get(created.number), await two.get(created.number)
        theirs.message = "theirs"
        await two.save(theirs)
        mine.message = "mine"
        with pytest.raises(ConflictError):
            await one.save(mine)
        assert (await one.get(created.number)).message == "theirs"
        mine = await one.get(created.number)
        mine.message = "mine, after reading again"
        await one.save(mine)
        assert (await two.get(created.number)).message == "mine, after reading again"
    finally:
        await store.close()


async def test_a_volume_left_unreleased_by_a_crash_is_retained_at_start(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    parts = Parts(tmp_path)
    await parts.volumes.ensure("orphan", 1024**2)  # made, then the commit that dropped it crashed
    engine = await parts.engine(store)
    try:
        assert ("retain", "orphan") in parts.volumes.calls
        assert parts.volumes.retained == {"orphan"} and (tmp_path / "volumes" / "orphan").is_dir()
    finally:
        await engine.stop()
        await store.close()


async def test_scheduled_backups_follow_the_applied_volumes(
    setup: tuple[Engine, Parts, SqliteStore], tmp_path: Path
) -> None:
    from socle.backup.schedule import VolumeBackupPlan
    from socle.server.components import Components
    from socle.server.parts import Plane, VolumeBackupsComponent
    from socle.settings import Settings
    from socle.state.registry import default_registry
    from socle.tasks import TaskMonitor

    engine, parts, _ = setup
    plane = Plane(
        settings=Settings(home=tmp_path / "home"),
        stores=default_registry(),
        monitor=TaskMonitor(),
        components=Components(),
        host="127.0.0.1",
        port=0,
        url="http://127.0.0.1:0",
        tls=None,
    )
    component = VolumeBackupsComponent(plane)
    assert await component.plans() == []  # no engine yet
    plane.engine = engine
    backed = volume("data") + "  backup: {schedule: '0 3 * * *', keep: 3}\n"
    repo = write(
        tmp_path / "repo",
        *BASE[:2],
        backed.replace("spec: {size: 1Gi, retain: true}\n", "spec:\n  size: 1Gi\n"),
        BASE[3],
    )
    await apply(engine, parts, repo)
    assert await component.plans() == [VolumeBackupPlan("data", "0 3 * * *", 3)]
