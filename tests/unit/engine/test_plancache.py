"""Planning caches kept across restarts: the first plan after a restart parses and
validates nothing unchanged; a file from other code, damaged or too open is ignored."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from socle.engine import plancache
from socle.engine.releases import ReleaseStore
from socle.engine.service import Engine
from socle.state.sqlite import SqliteStore
from tests.unit.engine.memdriver import MemDriver
from tests.unit.engine.memvolumes import DirVolumes
from tests.unit.engine.test_engine_kinds import BASE, settle, write


async def test_first_plan_after_a_restart_reuses_the_saved_caches(tmp_path: Path) -> None:
    repo = write(tmp_path / "repo", *BASE)
    cache_file = tmp_path / "cache" / "plan.pickle"
    store = await SqliteStore.open(tmp_path / "state.db")
    volumes = DirVolumes(tmp_path / "volumes")

    def engine() -> Engine:
        releases = ReleaseStore(tmp_path / "releases")
        return Engine(store, MemDriver(), releases, volumes=volumes, cache_file=cache_file)

    try:
        first = engine()
        await first.start()
        driver = first._driver
        assert isinstance(driver, MemDriver)
        _, revision = await first.apply(repo, None, "test")
        assert revision is not None
        assert await settle(first, driver, revision.number) == "succeeded"
        await first.stop()
        assert cache_file.stat().st_mode & 0o777 == 0o600

        second = engine()
        await second.start()
        try:
            _, the_plan = await second.plan(repo, None)
            stats = second.manifest_cache.stats
            assert the_plan.empty and the_plan.unchanged == 4
            assert (stats.parsed, stats.validated) == (0, 0)
            assert second.state_cache.misses == 0
            # An edited file is read again: the stamp of the saved entry no longer matches.
            (repo / "all.yaml").write_text((repo / "all.yaml").read_text().replace("10Mi", "20Mi"))
            _, the_plan = await second.plan(repo, None)
            assert [c.label for c in the_plan.changes] == ["Volume/cache"]
            assert second.manifest_cache.stats.parsed == 1
        finally:
            await second.stop()
    finally:
        await store.close()


@pytest.mark.parametrize("problem", ["other code", "damaged", "readable by others"])
def test_unusable_cache_files_are_ignored(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "plan.pickle"
    plancache.save(path, {"manifests": {}, "handlers": {}})
    assert plancache.load(path) == {"manifests": {}, "handlers": {}}
    if problem == "other code":
        data = pickle.loads(path.read_bytes())
        data["code"] = "0" * 64
        path.write_bytes(pickle.dumps(data))
    elif problem == "damaged":
        path.write_bytes(path.read_bytes()[:20])
    else:
        os.chmod(path, 0o644)
    assert plancache.load(path) is None
    assert plancache.load(tmp_path / "missing.pickle") is None
