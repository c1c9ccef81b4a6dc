"""First start on a home made by the single-kind version: nothing lost, migrated once.

The home in ``data/home-before-kinds`` was written by the previous version (see its
README): App targets at ``apps/<name>``, desired states as ``{"apps": ...}``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

from tests.e2e.socle_fixture import SocleServer

DATA = Path(__file__).parent / "data" / "home-before-kinds"


def _private_copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target)
    for folder, _dirs, files in os.walk(target):
        os.chmod(folder, 0o700)
        for name in files:
            os.chmod(Path(folder) / name, 0o600)


def _keys(home: Path) -> dict[str, bytes]:
    with sqlite3.connect(home / "state.db") as db:
        return {k: bytes(v) for k, v in db.execute("SELECT key, value FROM kv")}


def test_old_home_is_migrated_without_losing_anything(
    tmp_path: Path, socle_env: dict[str, str]
) -> None:
    home, repo = tmp_path / "home", tmp_path / "repo"
    _private_copy(DATA / "home", home)
    shutil.copytree(DATA / "repo", repo)
    before = _keys(home)
    assert "apps/api" in before and "objects/App/api" not in before

    server = SocleServer(home=home, env=socle_env)
    server.start()
    try:
        history = json.loads(server.cli("history", "--json").stdout)
        assert [(r["number"], r["status"]) for r in history] == [(2, "succeeded"), (1, "succeeded")]
        status = json.loads(server.cli("status", "--json").stdout)
        apps = {a["name"]: a for a in status["apps"]}
        assert set(apps) == {"api", "worker"}
        assert apps["api"]["kind"] == "App" and apps["api"]["revision"] == 2
        assert {(o["kind"], o["name"]) for o in status["objects"]} == {
            ("App", "api"),
            ("App", "worker"),
        }
        # The manifests revision 2 applied plan to nothing: same state, same digests.
        plan = server.cli("plan", str(repo), "--json", check=False)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert json.loads(plan.stdout)["unchanged"] == 2

        after = _keys(home)
        assert not [k for k in after if k.startswith("apps/")]
        target = json.loads(after["objects/App/api"])
        assert target["state"]["manifest"]["spec"]["env"] == {"GREETING": "hello again"}
        assert target["state"]["template"] == json.loads(before["apps/api"])["state"]["template"]
        for number in (1, 2):
            desired = json.loads(after[f"desired/{number:010d}"])
            assert set(desired) == {"objects"}
            assert set(desired["objects"]["App"]) == {"api", "worker"}
        assert after["meta/schema"] == b"2"
        for key in ("auth/tokens/", "revisions/0000000001", "revisions/0000000002"):
            assert any(k.startswith(key) for k in after), key

        # A rollback to a revision recorded by the old version still works.
        rolled = json.loads(server.cli("rollback", "1", "--yes", "--json").stdout)
        assert rolled["status"] == "succeeded", rolled
        plan = json.loads(server.cli("plan", str(repo), "--json", check=False).stdout)
        assert [(c["kind"], c["name"], c["action"]) for c in plan["changes"]] == [
            ("App", "api", "update")
        ]
        assert [f["path"] for f in plan["changes"][0]["fields"]] == ["spec.env.GREETING"]
    finally:
        server.cleanup()

    # Second start: already migrated, nothing rewritten, everything still there.
    migrated = _keys(home)
    server = SocleServer(home=home, env=socle_env)
    server.start()
    try:
        history = json.loads(server.cli("history", "--json").stdout)
        assert [r["number"] for r in history] == [3, 2, 1]
        assert {k: v for k, v in _keys(home).items() if k.startswith(("objects/", "desired/"))} == {
            k: v for k, v in migrated.items() if k.startswith(("objects/", "desired/"))
        }
    finally:
        server.cleanup()
