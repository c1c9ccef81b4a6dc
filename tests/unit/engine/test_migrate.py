"""Migration of single-kind state (``apps/<name>``, ``{"apps": ...}``) to objects by kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from socle.engine.migrate import SCHEMA_KEY, migrate
from socle.engine.targets import Rollout, Target, app_state
from socle.model.app import App
from socle.state.sqlite import SqliteStore


def old_target(name: str, **spec: Any) -> tuple[bytes, dict[str, Any]]:
    """A target as the single-kind version wrote it: its manifest had no ``volumes``."""
    app = App.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": name},
            "spec": {"run": {"command": ["python3", "app.py"]}, **spec},
        }
    )
    state = app_state(app, "r1")
    del state.manifest["spec"]["volumes"]
    target = Target(state, Path(f"/old/releases/{name}/r1"), Rollout(1, 1.0, "complete"))
    data = json.loads(target.to_json())
    return target.to_json(), data["state"]


async def test_migrates_targets_and_desired_states_once(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        api, api_state = old_target("api", replicas=2)
        worker, _ = old_target("worker", dependsOn=["api"])
        await store.put("apps/api", api)
        await store.put("apps/worker", worker)
        old_desired = {"apps": {"api": {**api_state, "release_root": "/old/r"}}}
        await store.put("desired/0000000001", json.dumps(old_desired).encode())
        await store.put("desired/0000000002", json.dumps({"objects": {}}).encode())
        # An interrupted earlier run already moved worker but crashed before dropping it.
        await store.put("objects/App/worker", worker)

        assert await migrate(store) == 2  # api moved, desired/1 rewritten
        assert await store.keys("apps/") == []
        assert await store.keys("objects/") == ["objects/App/api", "objects/App/worker"]
        moved = Target.from_json((await store.get("objects/App/api")).value)  # type: ignore[union-attr]
        assert moved.state.template == api_state["template"], "instances keep their names"
        assert moved.state.manifest["spec"]["volumes"] == [], "today's defaults, no plan noise"
        assert moved.state.digest == app_state(moved.app, "r1").digest
        assert moved.release_root == Path("/old/releases/api/r1")
        assert moved.rollout.status == "complete"
        desired = json.loads((await store.get("desired/0000000001")).value)  # type: ignore[union-attr]
        assert list(desired) == ["objects"]
        assert desired["objects"]["App"]["api"]["release_root"] == "/old/r"
        assert json.loads((await store.get("desired/0000000002")).value) == {"objects": {}}  # type: ignore[union-attr]
        assert (await store.get(SCHEMA_KEY)).value == b"2"  # type: ignore[union-attr]

        versions = {r.key: r.version for r in await store.scan("")}
        assert await migrate(store) == 0
        assert {r.key: r.version for r in await store.scan("")} == versions
    finally:
        await store.close()


async def test_empty_store_is_marked_and_left_alone(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        assert await migrate(store) == 0
        assert await store.keys("") == [SCHEMA_KEY]
        assert await migrate(store) == 0
    finally:
        await store.close()
