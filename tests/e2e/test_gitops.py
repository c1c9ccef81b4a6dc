"""GitOps end to end with real Git: a source follows a branch through commits, broken
commits, an empty or missing folder, a force-push, a rollback pin, a deleted branch and an
unreachable remote; webhooks (GitHub HMAC, GitLab token) over a real ``git daemon``; two
sources in one environment and one app in two environments."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import hvac
import yaml

from tests.e2e.gitops_repo import TOKEN, Remote, git, git_daemon, protected_http, web
from tests.e2e.socle_fixture import SocleServer, get_json, instance_url, wait_for


def source(server: SocleServer, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(server.cli("source", "show", name, "--json").stdout)
    return data["status"]


def sync(server: SocleServer, env: str) -> tuple[int, list[dict[str, Any]]]:
    result = server.cli("sync", env, "--json", check=False, timeout=300)
    return result.returncode, json.loads(result.stdout)


def version(server: SocleServer, app: str) -> str:
    return str(get_json(instance_url(server.app(app)))["version"])


def test_source_follows_its_branch_and_never_loses_the_last_good_revision(
    server: SocleServer, tmp_path: Path
) -> None:
    remote = Remote(tmp_path / "git")
    first = remote.commit_apps("deploy v1", {"web": web("v1")})
    server.cli(
        "source", "add", "platform", "--repo", remote.url, "--branch", "main",
        "--path", "deploy", "--env", "dev", "--interval", "1h", "--prune",
    )  # fmt: skip
    code, rows = sync(server, "dev")
    assert code == 0 and rows[0]["state"] == "synced", rows
    assert rows[0]["commit"]["sha"] == first
    assert rows[0]["commit"]["author"] == "Ada Tester <ada@example.test>"
    assert rows[0]["commit"]["message"] == "deploy v1"
    assert version(server, "web") == "v1"
    row = server.app("web")
    assert row["environment"] == "dev" and row["owner"] == "source:platform"

    second = remote.commit_apps("deploy v2", {"web": web("v2")})
    code, rows = sync(server, "dev")
    assert code == 0 and rows[0]["commit"]["sha"] == second
    assert version(server, "web") == "v2"

    # A merge request's preview: the plan of branch `feature` in dev, nothing applied.
    git(remote.work, "checkout", "--quiet", "-b", "feature")
    remote.commit_apps("try v9", {"web": web("v9")}, branch="feature")
    git(remote.work, "checkout", "--quiet", "main")
    git(remote.work, "reset", "--hard", "--quiet", second)
    preview = server.cli(
        "plan", "--source", remote.url, "--ref", "feature", "--path", "deploy", "--env", "dev",
        "--json", check=False,
    )  # fmt: skip
    assert preview.returncode == 2, preview.stderr
    planned = json.loads(preview.stdout)
    assert planned["source"] == "platform" and planned["commit"]["message"] == "try v9"
    assert [(c["action"], c["name"]) for c in planned["changes"]] == [("update", "web")]
    assert planned["changes"][0]["fields"][0]["new"] == "v9"
    assert version(server, "web") == "v2"

    # A broken commit: refused with its errors, attached to that commit; v2 keeps running.
    (remote.work / "deploy" / "apps.yaml").write_text(
        "apiVersion: socle/v1\nkind: App\nmetadata: {name: web}\nspec: {replicas: -1}\n"
    )
    broken = remote.commit("break it")
    code, rows = sync(server, "dev")
    assert code == 1 and rows[0]["state"] == "failed"
    assert rows[0]["refused"] == broken and broken[:12] in rows[0]["reason"]
    assert any("apps.yaml:" in e for e in rows[0]["errors"]), rows[0]["errors"]
    assert rows[0]["commit"]["sha"] == second, "the environment stays on the last good commit"
    assert version(server, "web") == "v2"
    envs = json.loads(server.cli("status", "--json").stdout)["environments"]
    assert envs[0]["env"] == "dev" and envs[0]["state"] == "failed"

    # An empty folder never deletes everything; a missing one neither.
    (remote.work / "deploy" / "apps.yaml").unlink()
    remote.commit("empty the folder")
    code, rows = sync(server, "dev")
    assert code == 1 and "would delete every object" in rows[0]["reason"]
    shutil.rmtree(remote.work / "deploy")
    remote.commit("remove the folder")
    code, rows = sync(server, "dev")
    assert code == 1 and "folder 'deploy' does not exist" in rows[0]["reason"]
    assert version(server, "web") == "v2"

    third = remote.commit_apps("deploy v3", {"web": web("v3")})
    code, rows = sync(server, "dev")
    assert code == 0 and rows[0]["commit"]["sha"] == third
    assert version(server, "web") == "v3"

    # Force-push the branch back to the first commit: Git is the truth.
    git(remote.work, "reset", "--hard", "--quiet", first)
    git(remote.work, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")
    code, rows = sync(server, "dev")
    assert code == 0 and rows[0]["commit"]["sha"] == first
    assert version(server, "web") == "v1"

    listed = json.loads(server.cli("history", "dev", "--json").stdout)
    refused = [h for h in listed if h["status"] == "refused"]  # broken commits show too
    assert refused and all(h["number"] is None and h["commit"]["sha"] for h in refused)
    history = [h for h in listed if h["status"] != "refused"]
    assert [h["commit"]["sha"] for h in history[:3]] == [first, third, second]
    assert all(h["status"] == "succeeded" and h["duration"] is not None for h in history[:3])

    # Roll back to the v3 revision: pinned, and a sync of the same commit keeps the pin.
    v3_revision = history[1]["number"]
    server.cli("rollback", "dev", str(v3_revision), "--yes")
    wait_for(lambda: version(server, "web") == "v3", 60, "rolled back to v3")
    code, rows = sync(server, "dev")
    assert rows[0]["state"] == "pinned" and version(server, "web") == "v3"
    envs = json.loads(server.cli("status", "--json").stdout)["environments"]
    assert envs[0]["pinned"]["revision"] == v3_revision
    diff = json.loads(server.cli("diff", "dev", "--json", check=False).stdout)
    assert diff[0]["commit"] == first and diff[0]["changes"], "live (v3) differs from Git (v1)"
    # A new commit ends the pin.
    fourth = remote.commit_apps("deploy v4", {"web": web("v4")})
    code, rows = sync(server, "dev")
    assert code == 0 and rows[0]["commit"]["sha"] == fourth
    assert version(server, "web") == "v4"
    assert json.loads(server.cli("status", "--json").stdout)["environments"][0]["pinned"] is None

    # A deleted branch and an unreachable remote: failed with the reason, nothing deleted.
    git(remote.bare, "branch", "-D", "main")
    code, rows = sync(server, "dev")
    assert code == 1 and "branch 'main' does not exist" in rows[0]["reason"]
    shutil.rmtree(remote.bare)
    code, rows = sync(server, "dev")
    assert code == 1 and "git fetch failed" in rows[0]["reason"]
    assert version(server, "web") == "v4"
    assert rows[0]["commit"]["sha"] == fourth

    listed = json.loads(server.cli("source", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["platform"]
    server.cli("source", "remove", "platform")
    assert json.loads(server.cli("source", "list", "--json").stdout) == []
    assert version(server, "web") == "v4", "removing a source keeps its apps running"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_webhooks_over_git_daemon(dev_server: SocleServer, tmp_path: Path) -> None:
    server = dev_server
    keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
    vault = hvac.Client(url=server.url, token=keys["root_token"])
    secret = "hook-secret-5b0e7c"
    vault.secrets.kv.v2.create_or_update_secret(
        "git/hooks", secret={"secret": secret}, mount_point="secret"
    )
    vault.sys.create_or_update_policy(
        "gitops-shop", 'path "secret/data/git/hooks" { capabilities = ["read"] }'
    )
    remote = Remote(tmp_path / "git")
    remote.commit_apps("v1", {"shop": web("v1")})
    with git_daemon(tmp_path / "git") as base:
        server.cli(
            "source", "add", "shop", "--repo", f"{base}/remote.git", "--branch", "main",
            "--path", "deploy", "--env", "prod", "--interval", "1h",
            "--webhook-secret", "secret/data/git/hooks",
        )  # fmt: skip
        code, rows = sync(server, "prod")
        assert code == 0 and version(server, "shop") == "v1", rows

        second = remote.commit_apps("v2", {"shop": web("v2")})
        body = json.dumps({"ref": "refs/heads/main", "after": second}).encode()
        path = "/api/v1/gitops/webhook/shop"
        delivery = str(uuid.uuid4())
        headers = {"X-Hub-Signature-256": sign(secret, body), "X-GitHub-Delivery": delivery,
                   "X-GitHub-Event": "push", "Content-Type": "application/json"}  # fmt: skip
        bad = dict(headers, **{"X-Hub-Signature-256": sign("wrong", body)})
        assert server.api("POST", path, token="", headers=bad, content=body).status_code == 401
        unsigned = {"X-GitHub-Delivery": delivery}
        assert server.api("POST", path, token="", headers=unsigned, content=body).status_code == 401
        answer = server.api("POST", path, token="", headers=headers, content=body)
        assert answer.status_code == 202, answer.text
        wait_for(lambda: source(server, "shop")["commit"]["sha"] == second, 60, "webhook sync")
        assert version(server, "shop") == "v2"
        replay = server.api("POST", path, token="", headers=headers, content=body)
        assert replay.status_code == 409 and "replay" in replay.text
        unknown = server.api("POST", "/api/v1/gitops/webhook/nope", token="", headers=headers,
                             content=body)  # fmt: skip
        assert unknown.status_code == 401

        third = remote.commit_apps("v3", {"shop": web("v3")})
        gitlab = {"X-Gitlab-Token": secret, "X-Gitlab-Event": "Push Hook",
                  "X-Gitlab-Event-UUID": str(uuid.uuid4())}  # fmt: skip
        wrong = dict(gitlab, **{"X-Gitlab-Token": "nope"})
        assert server.api("POST", path, token="", headers=wrong, content=body).status_code == 401
        assert server.api("POST", path, token="", headers=gitlab, content=body).status_code == 202
        wait_for(lambda: source(server, "shop")["commit"]["sha"] == third, 60, "gitlab sync")
        assert version(server, "shop") == "v3"
        server.stop(keep_apps=True)  # delivery ids are remembered across a restart
        server.start()
        again = server.api("POST", path, token="", headers=headers, content=body)
        assert again.status_code == 409 and "replay" in again.text
    log = server.log.read_text() + server.cli("status", "--json").stdout
    assert secret not in log


def test_sources_own_their_objects_and_environments_scope_them(
    server: SocleServer, tmp_path: Path
) -> None:
    team_a, team_b = Remote(tmp_path / "a"), Remote(tmp_path / "b")
    team_a.commit_apps("a", {"api": web("a-dev"), "worker": web("w")})
    team_b.commit_apps("b", {"shop": web("b")})
    # Two sources from a bootstrap manifest (kind Source, kept in Git), one from the CLI.
    bootstrap = tmp_path / "bootstrap"
    bootstrap.mkdir()
    docs = [
        {"apiVersion": "socle/v1", "kind": "Source", "metadata": {"name": name},
         "spec": {"repo": remote.url, "branch": "main", "path": "deploy", "env": env,
                  "interval": "1h", "prune": True, "requireApproval": env == "prod"}}
        for name, remote, env in (("team-a", team_a, "dev"), ("team-a-prod", team_a, "prod"))
    ]  # fmt: skip
    (bootstrap / "sources.yaml").write_text(yaml.safe_dump_all(docs))
    applied = json.loads(server.cli("source", "apply", str(bootstrap), "--json").stdout)
    assert [s["name"] for s in applied] == ["team-a", "team-a-prod"]
    server.cli(
        "source", "add", "team-b", "--repo", team_b.url, "--branch", "main", "--path", "deploy",
        "--env", "dev", "--interval", "1h",
    )  # fmt: skip
    assert sync(server, "dev")[0] == 0
    assert sync(server, "prod")[0] == 0
    apps = {(a["environment"], a["declared"]): a for a in server.status()["apps"]}
    assert set(apps) == {("dev", "api"), ("dev", "worker"), ("dev", "shop"),
                         ("prod", "api"), ("prod", "worker")}  # fmt: skip
    # The same app runs in both environments, side by side, each with its own instances.
    dev_pid = apps[("dev", "api")]["instances"][0]["pid"]
    prod_pid = apps[("prod", "api")]["instances"][0]["pid"]
    assert dev_pid != prod_pid
    assert version(server, apps[("prod", "api")]["name"]) == "a-dev"
    # Service discovery names both by their declared name: api.dev and api.prod.
    listed = server.api("GET", "/api/v1/services/api").json()["instances"]
    assert {i["environment"] for i in listed} == {"dev", "prod"}

    # Team a prunes worker: team b's shop is untouched; prod (same repo) prunes its own.
    team_a.commit_apps("drop worker", {"api": web("a2")})
    assert sync(server, "dev")[0] == 0
    names = {(a["environment"], a["declared"]) for a in server.status()["apps"]}
    assert ("dev", "worker") not in names and ("dev", "shop") in names
    assert ("prod", "worker") in names, "prod has not synced the new commit yet"

    # Promote exactly dev's healthy commit to prod: prod requires an approval first.
    dev_sha = source(server, "team-a")["commit"]["sha"]
    promoted = json.loads(server.cli("promote", "--from", "dev", "--to", "prod", "--json").stdout)[
        "promotion"
    ]
    assert (promoted["sha"], promoted["approved"]) == (dev_sha, False)
    wait_for(lambda: source(server, "team-a-prod")["state"] == "waiting for approval", 30, "wait")
    prod_api = next(a["name"] for a in server.status()["apps"]
                    if (a["environment"], a["declared"]) == ("prod", "api"))  # fmt: skip
    assert version(server, prod_api) == "a-dev", "nothing applied before the approval"
    approved = json.loads(server.cli("approve", "prod", "--json").stdout)
    assert approved["promotion"]["approved_by"] == "admin"
    assert approved["results"][0]["commit"]["sha"] == dev_sha
    assert version(server, prod_api) == "a2"
    refused = server.cli("approve", "prod", check=False)
    assert refused.returncode == 1 and "no promotion waits" in refused.stderr

    # A third source declaring team a's api in dev is refused, naming both places.
    team_c = Remote(tmp_path / "c")
    team_c.commit_apps("c", {"api": web("c")})
    server.cli(
        "source", "add", "team-c", "--repo", team_c.url, "--branch", "main", "--path",
        "deploy", "--env", "dev", "--interval", "1h",
    )  # fmt: skip
    code, rows = sync(server, "dev")
    failed = next(r for r in rows if r["source"] == "team-c")
    assert code == 1 and failed["state"] == "failed"
    assert any("source:team-a" in e and "apps.yaml:1" in e for e in failed["errors"]), failed
    assert version(server, next(a["name"] for a in server.status()["apps"]
                                if (a["environment"], a["declared"]) == ("dev", "api"))) == "a2"  # fmt: skip

    # Without --prune, an app that left Git is kept and the source says so.
    team_b.commit_apps("shop moves elsewhere", {"cart": web("c1")})
    sync(server, "dev")
    status = source(server, "team-b")
    assert status["state"] == "out of sync", status
    assert "left Git but are kept (prune off): shop" in status["reason"]
    names = {(a["environment"], a["declared"]) for a in server.status()["apps"]}
    assert {("dev", "shop"), ("dev", "cart")} <= names


def test_drift_is_reported_and_self_heal_corrects_it(
    socle_env: dict[str, str], tmp_path: Path
) -> None:
    server = SocleServer(
        home=tmp_path / "home", env=dict(socle_env, SOCLE_GITOPS_DRIFT_SECONDS="0.3")
    )
    server.start()
    try:
        remote = Remote(tmp_path / "git")
        remote.commit_apps("v1", {"web": web("v1")})
        add = ["source", "add", "platform", "--repo", remote.url, "--branch", "main",
               "--path", "deploy", "--env", "dev", "--interval", "1h"]  # fmt: skip
        server.cli(*add)
        assert sync(server, "dev")[0] == 0
        v1 = json.loads(server.cli("history", "dev", "--json").stdout)[0]["number"]
        remote.commit_apps("v2", {"web": web("v2")})
        assert sync(server, "dev")[0] == 0

        def events() -> list[dict[str, Any]]:
            data: list[dict[str, Any]] = server.api(
                "GET", "/api/v1/gitops/events", params={"env": "dev"}
            ).json()
            return data

        # Someone rolls the environment back by revision number, behind GitOps' back.
        server.cli("rollback", str(v1), "--yes")
        wait_for(lambda: source(server, "platform")["state"] == "out of sync", 60, "drift seen")
        assert "drift: web: live differs" in source(server, "platform")["reason"]
        assert any(e["event"] == "drift detected" for e in events())
        assert version(server, "web") == "v1", "self-heal off: reported, not corrected"

        server.cli(*add, "--self-heal", "--replace")
        wait_for(lambda: version(server, "web") == "v2", 60, "synced again")
        wait_for(lambda: source(server, "platform")["state"] == "synced", 60, "synced state")
        # Self-heal may supersede the rollback before it even settles: either way, Git wins.
        server.cli("rollback", str(v1), "--yes", check=False)
        wait_for(lambda: version(server, "web") == "v2", 60, "self-healed back to Git")
        wait_for(
            lambda: any(e["event"] == "drift corrected" for e in events()), 30, "corrected event"
        )

        # Auto-sync off: the 1 s poll sees a new commit and only says so.
        server.cli(
            "source", "add", "manual", "--repo", remote.url, "--branch", "main", "--path",
            "deploy", "--env", "qa", "--interval", "1s", "--no-auto-sync", "--prune",
        )  # fmt: skip
        assert sync(server, "qa")[0] == 0
        qa = next(a["name"] for a in server.status()["apps"] if a["environment"] == "qa")
        assert version(server, qa) == "v2"
        newest = remote.commit_apps("v3", {"web": web("v3")})
        wait_for(lambda: source(server, "manual")["state"] == "out of sync", 30, "poll saw it")
        assert newest[:12] in source(server, "manual")["reason"]
        assert version(server, qa) == "v2"
        # ... and /metrics says so, for the built-in rule SocleEnvironmentOutOfSync.
        gauge = 'socle_gitops_source_out_of_sync{env="qa",source="manual",state="out_of_sync"} 1.0'
        assert gauge in server.api("GET", "/metrics").text
        assert sync(server, "qa")[0] == 0 and version(server, qa) == "v3"
        assert 'source="manual"' not in server.api("GET", "/metrics").text

        # Emptying the folder deletes everything only when explicitly allowed.
        (remote.work / "deploy" / "apps.yaml").unlink()
        remote.commit("retire qa")
        code, rows = sync(server, "qa")
        assert code == 1 and "would delete every object" in rows[0]["reason"]
        allowed = server.cli("sync", "qa", "--allow-delete-all", "--json", timeout=300)
        assert json.loads(allowed.stdout)[0]["state"] == "synced"
        wait_for(
            lambda: not [a for a in server.status()["apps"] if a["environment"] == "qa"],
            60,
            "qa's app deleted",
        )
    finally:
        server.cleanup()


def test_credentials_come_from_the_secrets_engine_and_never_show(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    server = dev_server
    keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
    vault = hvac.Client(url=server.url, token=keys["root_token"])
    vault.secrets.kv.v2.create_or_update_secret(
        "git/private", secret={"token": TOKEN}, mount_point="secret"
    )
    remote = Remote(tmp_path / "git")
    remote.commit_apps("v1", {"private": web("v1")})
    git(remote.bare, "update-server-info")
    with protected_http(tmp_path / "git") as (url, seen):
        server.cli(
            "source", "add", "private", "--repo", f"{url}/remote.git", "--branch", "main",
            "--path", "deploy", "--env", "dev", "--interval", "1h",
            "--credentials", "secret/data/git/private",
        )  # fmt: skip
        # Deny by default: without the policy gitops-private the token cannot be read.
        code, rows = sync(server, "dev")
        assert code == 1 and "hold no readable token" in rows[0]["reason"], rows
        vault.sys.create_or_update_policy(
            "gitops-private", 'path "secret/data/git/private" { capabilities = ["read"] }'
        )
        code, rows = sync(server, "dev")
        assert code == 0 and version(server, "private") == "v1", rows
        assert any(s.startswith("Basic ") for s in seen)
        # A rotated (wrong) token fails with the reason, and still never shows.
        vault.secrets.kv.v2.create_or_update_secret(
            "git/private", secret={"token": TOKEN + "-old"}, mount_point="secret"
        )
        remote.commit_apps("v2", {"private": web("v2")})
        git(remote.bare, "update-server-info")
        code, rows = sync(server, "dev")
        assert code == 1 and "git fetch failed" in rows[0]["reason"]
    shown = (
        server.log.read_text()
        + server.cli("status", "--json").stdout
        + server.cli("source", "show", "private", "--json").stdout
        + server.cli("history", "dev", "--json").stdout
        + json.dumps(server.api("GET", "/api/v1/gitops/events").json())
    )
    assert TOKEN not in shown
    assert version(server, "private") == "v1"
