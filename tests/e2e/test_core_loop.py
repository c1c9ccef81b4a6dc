"""The core loop like a user runs it: plan, apply, status, heal, update, roll back."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.e2e.socle_fixture import (
    SocleServer,
    get_json,
    instance_url,
    wait_for,
    write_repo,
)


def ready_count(server: SocleServer, name: str) -> int:
    return int(server.app(name)["ready"])


def test_plan_apply_status_and_idempotence(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2, "env": {"VERSION": "v1"}}})
    plan = server.cli("plan", str(repo), check=False)
    assert plan.returncode == 2, plan.stderr
    assert "create" in plan.stdout and "App/web" in plan.stdout

    server.cli("apply", str(repo), "--yes")
    app = server.app("web")
    assert app["ready"] == 2 and app["desired"] == 2 and app["health"] == "healthy"
    served_by = {get_json(instance_url(app, n))["instance"] for n in (0, 1)}
    assert served_by == {i["id"] for i in app["instances"]}
    assert len({i["pid"] for i in app["instances"]}) == 2

    again = server.cli("apply", str(repo), "--yes")
    assert "No changes" in again.stdout
    assert server.cli("plan", str(repo), check=False).returncode == 0
    history = json.loads(server.cli("history", "--json").stdout)
    assert [r["number"] for r in history] == [1]
    assert history[0]["status"] == "succeeded"

    status = json.loads(server.cli("status", "--json").stdout)
    assert status["isolation"]["mode"]
    assert status["apps"][0]["instances"][0]["ports"]["http"] > 0
    table = server.cli("status").stdout
    assert "web" in table and "2/2" in table


def test_killed_instance_is_restarted(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}})
    server.cli("apply", str(repo), "--yes")
    before = server.app("web")["instances"][0]
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()

    def healed() -> bool:
        inst = server.app("web")["instances"][0]
        return bool(inst["ready"] and inst["restarts"] >= 1)

    wait_for(healed, 20, "instance to be restarted and healthy")
    print(f"kill -9 -> healthy again in {time.monotonic() - killed_at:.2f}s")
    after = server.app("web")
    assert after["instances"][0]["pid"] != before["pid"]
    assert get_json(instance_url(after))["instance"] == before["id"]
    assert len(after["instances"]) == 1


def test_rolling_update_then_auto_rollback_then_manual_rollback(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    write_repo(repo, {"web": {"replicas": 2, "env": {"VERSION": "v1"}}})
    server.cli("apply", str(repo), "--yes")
    write_repo(repo, {"web": {"replicas": 2, "env": {"VERSION": "v2"}}})
    plan = json.loads(server.cli("plan", str(repo), "--json", check=False).stdout)
    assert plan["changes"][0]["fields"] == [{"path": "spec.env.VERSION", "old": "v1", "new": "v2"}]
    server.cli("apply", str(repo), "--yes")
    app = server.app("web")
    assert len(app["instances"]) == 2
    assert {get_json(instance_url(app, n))["version"] for n in (0, 1)} == {"v2"}

    broken = {
        "replicas": 2,
        "env": {"VERSION": "v3", "CRASH": "1"},
        "update": {"progressDeadlineSeconds": "3s", "autoRollback": True},
    }
    write_repo(repo, {"web": broken})
    result = server.cli("apply", str(repo), "--yes", check=False)
    assert result.returncode == 1
    assert "rolled_back" in result.stderr and "not ready within 3s" in result.stderr
    history = json.loads(server.cli("history", "--json").stdout)
    assert history[0]["status"] == "rolled_back"
    assert "rolled back to release" in history[0]["message"]
    wait_for(
        lambda: (
            server.app("web")["health"] == "healthy" and len(server.app("web")["instances"]) == 2
        ),
        30,
        "rollback to settle",
    )
    app = server.app("web")
    assert {get_json(instance_url(app, n))["version"] for n in (0, 1)} == {"v2"}

    server.cli("rollback", "1", "--yes")
    app = server.app("web")
    assert {get_json(instance_url(app, n))["version"] for n in (0, 1)} == {"v1"}
    history = json.loads(server.cli("history", "--json").stdout)
    assert history[0]["rollback_of"] == 1 and history[0]["status"] == "succeeded"


def test_apps_outlive_a_killed_control_plane_and_are_readopted(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2}})
    server.cli("apply", str(repo), "--yes")
    app = server.app("web")
    urls = [instance_url(app, n) for n in (0, 1)]
    pids = sorted(i["pid"] for i in app["instances"])

    server.kill9()
    assert all(get_json(u)["instance"] for u in urls), "apps keep serving"
    server.start()
    wait_for(lambda: ready_count(server, "web") == 2, 20, "re-adoption")
    app = server.app("web")
    assert len(app["instances"]) == 2, "no duplicates"
    assert sorted(i["pid"] for i in app["instances"]) == pids, "the same processes"
    assert [instance_url(app, n) for n in (0, 1)] == urls
    assert server.cli("plan", str(repo), check=False).returncode == 0


def test_control_plane_killed_during_apply_converges_after_restart(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    write_repo(repo, {"web": {"replicas": 2, "env": {"VERSION": "v1"}}})
    server.cli("apply", str(repo), "--yes")
    old_urls = [instance_url(server.app("web"), n) for n in (0, 1)]

    write_repo(
        repo,
        {"web": {"replicas": 2, "env": {"VERSION": "v2"}, "update": {"minHealthySeconds": "1s"}}},
    )
    server.cli("apply", str(repo), "--yes", "--no-wait")
    wait_for(lambda: len(server.app("web")["instances"]) >= 3, 20, "rollout to start")
    server.kill9()
    assert any(get_json(u)["version"] == "v1" for u in old_urls), "apps still serving"

    server.start()

    def converged() -> bool:
        app = server.app("web")
        versions = {get_json(instance_url(app, n))["version"] for n in (0, 1)}
        return app["ready"] == 2 and len(app["instances"]) == 2 and versions == {"v2"}

    wait_for(converged, 60, "convergence after restart")
    latest = json.loads(server.cli("history", "--json").stdout)[0]
    wait_for(
        lambda: json.loads(server.cli("history", "--json").stdout)[0]["status"] == "succeeded",
        30,
        "revision to finish",
    )
    assert latest["number"] == 2


def test_build_failure_changes_nothing(server: SocleServer, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_repo(repo, {"web": {"env": {"VERSION": "v1"}}})
    server.cli("apply", str(repo), "--yes")
    url = instance_url(server.app("web"))
    write_repo(
        repo,
        {
            "web": {
                "env": {"VERSION": "v2"},
                "build": [{"command": ["sh", "-c", "echo compiling; echo boom >&2; exit 7"]}],
            }
        },
    )
    result = server.cli("apply", str(repo), "--yes", check=False)
    assert result.returncode == 1
    assert "exit" in result.stderr and "boom" in result.stderr
    assert get_json(url)["version"] == "v1"
    assert server.app("web")["revision"] == 1
    history = json.loads(server.cli("history", "--json").stdout)
    assert history[0]["status"] == "failed" and "nothing was changed" in history[0]["message"]


def test_dependencies_start_in_order_and_delete_prunes(server: SocleServer, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_repo(repo, {"db": {}, "web": {"dependsOn": ["db"]}})
    server.cli("apply", str(repo), "--yes")
    db, web = server.app("db"), server.app("web")
    assert db["instances"][0]["started_at"] <= web["instances"][0]["started_at"]
    write_repo(repo, {"db": {}})
    plan = json.loads(server.cli("plan", str(repo), "--json", check=False).stdout)
    assert [(c["action"], c["name"]) for c in plan["changes"]] == [("delete", "web")]
    server.cli("apply", str(repo), "--yes")
    assert [a["name"] for a in server.status()["apps"]] == ["db"]


def test_logs(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2}})
    server.cli("apply", str(repo), "--yes")
    out = server.cli("logs", "web").stdout
    assert out.count("listening on") == 2
    only_one = server.cli("logs", "web", "--instance", "1", "--json").stdout.splitlines()
    assert only_one and all(json.loads(line)["instance"].endswith("-1") for line in only_one)
    assert server.cli("logs", "web", "--since", "1h").stdout.count("listening on") == 2
    missing = server.cli("logs", "nope", check=False)
    assert missing.returncode == 1 and "no instance" in missing.stderr


def test_down_stops_apps_and_keep_apps_keeps_them(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}})
    server.cli("apply", str(repo), "--yes")
    url = instance_url(server.app("web"))
    server.cli("down", "--keep-apps")
    assert get_json(url)["version"] == ""
    server.start()
    server.cli("down")
    wait_for(lambda: _refused(url), 20, "app to stop")


def _refused(url: str) -> bool:
    try:
        get_json(url)
    except Exception:
        return True
    return False
