"""Two kinds through the CLI: Volumes and the Apps that mount them, like a user runs them.

The notes service of ``examples/quickstart`` writes through HTTP into SQLite on a Volume;
the data must survive a code change (new release), a rollback, and ``kill -9`` of the
control plane. Needs the local volume provider (``socle.runtime.local.volumes``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.socle_fixture import SocleServer, wait_for

NOTES = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "apps" / "notes"


@pytest.fixture(autouse=True)
def _unmount_volumes(tmp_path: Path) -> Iterator[None]:
    """Volumes may be loop-mounted images: unmount what this test's home left mounted."""
    yield
    mounts = Path("/proc/mounts").read_text().splitlines()
    for point in sorted((line.split()[1] for line in mounts), reverse=True):
        if point.startswith(str(tmp_path) + "/"):
            subprocess.run(["umount", point], check=False, capture_output=True)


def write_repo(root: Path, *, marker: str = "v1", cache: bool = True) -> Path:
    """Volume data (mounted by notes at /data), Volume cache, App notes, App web that
    dependsOn [notes, Volume/cache]."""
    (root / "notes").mkdir(parents=True, exist_ok=True)
    code = (NOTES / "notes.py").read_text()
    (root / "notes" / "notes.py").write_text(f"# release {marker}\n{code}")
    notes = {
        "replicas": 1,
        "run": {"command": ["python3", "notes.py"], "workdir": "notes"},
        "env": {"NOTES_DIR": "/data"},
        "ports": [{"name": "http"}],
        "health": {"http": {"path": "/healthz", "port": "http"}, "interval": "1s"},
        "volumes": [{"name": "data", "mountPath": "/data"}],
        "update": {"strategy": "recreate", "progressDeadlineSeconds": "60s"},
        "stopGrace": "2s",
    }
    docs: list[dict[str, Any]] = [
        {"apiVersion": "socle/v1", "kind": "Volume", "metadata": {"name": "data"},
         "spec": {"size": "16Mi", "retain": True}},
        {"apiVersion": "socle/v1", "kind": "App", "metadata": {"name": "notes"}, "spec": notes},
    ]  # fmt: skip
    if cache:
        docs += [
            {"apiVersion": "socle/v1", "kind": "Volume", "metadata": {"name": "cache"},
             "spec": {"size": "8Mi", "retain": False}},
            {"apiVersion": "socle/v1", "kind": "App", "metadata": {"name": "web"},
             "spec": {**notes, "volumes": [{"name": "cache", "mountPath": "/var/cache/web"}],
                      "env": {"NOTES_DIR": "/var/cache/web"},
                      "dependsOn": ["notes", "Volume/cache"]}},
        ]  # fmt: skip
    (root / "all.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return root


def notes_url(server: SocleServer, app: str = "notes") -> str:
    found = server.app(app)
    inst = next(i for i in found["instances"] if i["ready"])
    return f"http://{inst['address']}:{inst['ports']['http']}/notes"


def notes(server: SocleServer) -> list[str]:
    response = httpx.get(notes_url(server), timeout=10)
    response.raise_for_status()
    return [n["text"] for n in response.json()["notes"]]


def add(server: SocleServer, text: str) -> None:
    response = httpx.post(notes_url(server), content=text.encode(), timeout=10)
    assert response.status_code == 201, response.text


def test_two_kinds_with_cross_kind_dependencies(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo")
    plan = server.cli("plan", str(repo), "--json", check=False)
    assert plan.returncode == 2, plan.stderr
    order = [(c["action"], c["kind"], c["name"]) for c in json.loads(plan.stdout)["changes"]]
    assert order == [
        ("create", "Volume", "cache"),
        ("create", "Volume", "data"),
        ("create", "App", "notes"),
        ("create", "App", "web"),
    ]
    table = server.cli("plan", str(repo), check=False).stdout
    assert "Volume/data" in table and "App/web" in table

    revision = json.loads(server.cli("apply", str(repo), "--yes", "--json").stdout)
    assert revision["status"] == "succeeded", revision
    assert set(revision["apps"]) == {"Volume/cache", "Volume/data", "notes", "web"}
    add(server, "written through the app")
    status = json.loads(server.cli("status", "--json").stdout)
    rows = {(o["kind"], o["name"]): o for o in status["objects"]}
    assert rows[("Volume", "data")]["health"] in ("ready", "warning")
    assert rows[("App", "notes")]["volumes"] == [
        {"name": "data", "mountPath": "/data", "readOnly": False}
    ]
    assert "Volume/data" in server.cli("status").stdout

    listed = {v["name"]: v for v in json.loads(server.cli("volume", "list", "--json").stdout)}
    assert listed["data"]["declared"] and listed["data"]["mounted_by"] == ["notes"]
    assert listed["cache"]["mounted_by"] == ["web"]
    shown = json.loads(server.cli("volume", "show", "data", "--json").stdout)
    assert shown["size_bytes"] == 16 * 1024**2 and shown["used_bytes"] > 0
    assert "notes" in server.cli("volume", "list").stdout

    # Purging a declared, mounted volume is refused; nothing changes.
    refused = server.cli("volume", "delete", "data", "--purge", check=False)
    assert refused.returncode != 0 and "still declared" in refused.stderr
    assert notes(server) == ["written through the app"]

    # Removing web and cache: web stops first, then cache (retain: false) is purged.
    write_repo(repo, cache=False)
    plan = json.loads(server.cli("plan", str(repo), "--json", check=False).stdout)
    assert [(c["action"], c["kind"], c["name"]) for c in plan["changes"]] == [
        ("delete", "App", "web"),
        ("delete", "Volume", "cache"),
    ]
    revision = json.loads(server.cli("apply", str(repo), "--yes", "--json").stdout)
    assert revision["status"] == "succeeded", revision
    assert revision["apps"]["Volume/cache"]["phase"] == "deleted"
    names = [v["name"] for v in json.loads(server.cli("volume", "list", "--json").stdout)]
    assert names == ["data"]


def test_volume_data_survives_code_change_rollback_and_kill9(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", cache=False)
    server.cli("apply", str(repo), "--yes")
    add(server, "first")
    release_1 = server.app("notes")["release"]

    write_repo(repo, marker="v2", cache=False)  # new code: a new release
    server.cli("apply", str(repo), "--yes")
    assert server.app("notes")["release"] != release_1
    assert notes(server) == ["first"]
    add(server, "after the code change")

    rolled = json.loads(server.cli("rollback", "1", "--yes", "--json").stdout)
    assert rolled["status"] == "succeeded", rolled
    assert server.app("notes")["release"] == release_1
    assert notes(server) == ["after the code change", "first"]
    add(server, "after the rollback")

    pid = server.app("notes")["instances"][0]["pid"]
    server.kill9()
    server.start()
    wait_for(lambda: server.app("notes")["ready"] == 1, 60, "notes re-adopted")
    assert server.app("notes")["instances"][0]["pid"] == pid, "apps outlive the control plane"
    assert notes(server) == ["after the rollback", "after the code change", "first"]
    add(server, "after kill -9")
    assert len(notes(server)) == 4


def test_empty_folder_apply_is_refused(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", cache=False)
    server.cli("apply", str(repo), "--yes")
    add(server, "keep me")
    # The same source (folder) emptied: a different folder is another source and would
    # plan nothing of this one's objects.
    empty = repo
    (repo / "all.yaml").unlink()
    before = server.cli("history", "--json").stdout

    for command in (("plan",), ("apply", "--yes")):
        result = server.cli(*command, str(empty), check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "would delete every object" in result.stderr
        assert "--allow-delete-all" in result.stderr
    assert server.cli("history", "--json").stdout == before
    assert notes(server) == ["keep me"]

    result = server.cli("apply", str(empty), "--yes", "--allow-delete-all", "--json")
    assert json.loads(result.stdout)["status"] == "succeeded"
    wait_for(lambda: not server.status()["apps"], 30, "apps stopped")
    (volume,) = json.loads(server.cli("volume", "list", "--json").stdout)
    assert (volume["name"], volume["declared"], volume["retained"]) == ("data", False, True)

    refused = server.cli("volume", "delete", "data", check=False)
    assert refused.returncode != 0 and "--purge" in refused.stderr
    server.cli("volume", "delete", "data", "--purge")
    assert json.loads(server.cli("volume", "list", "--json").stdout) == []
    shutil.rmtree(empty)
