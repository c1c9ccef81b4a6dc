"""(a) GitOps: push -> webhook -> changed app healthy, over N pushes (default 20).

A real control plane (dev mode, for the webhook secret in the secrets engine), a real bare
repository served over file://, one stdlib web app. Each round commits a new VERSION,
pushes, posts a GitHub-signed push webhook and waits until an instance answers with the new
version; it also splits that time into webhook -> revision created (verify, fetch,
checkout, plan) and the revision's rollout (start, health, stop the old one). For comparison it also times the same change made by `socle apply` of a folder
from the CLI (process start, plan, apply, wait included).
Target: app start time + <= 1 s (Argo CD polls every 3 minutes by default).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
import uuid

import httpx
import hvac
from _harness import percentiles, socle_server

from tests.e2e.gitops_repo import Remote, web
from tests.e2e.socle_fixture import instance_url, write_repo

SECRET = "bench-webhook-secret"


def answers(server: object, version: str) -> bool:
    try:
        app = server.app("web")  # type: ignore[attr-defined]
        if app["ready"] < app["desired"]:
            return False
        got = httpx.get(instance_url(app), timeout=1).json()
        return bool(got["version"] == version)
    except (httpx.HTTPError, StopIteration, KeyError, IndexError):
        return False


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    samples: list[float] = []
    baseline: list[float] = []
    overhead: list[float] = []
    rollout: list[float] = []
    with socle_server(("--dev",)) as (server, tmp):
        keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
        vault = hvac.Client(url=server.url, token=keys["root_token"])
        vault.secrets.kv.v2.create_or_update_secret(
            "git/hook", secret={"secret": SECRET}, mount_point="secret"
        )
        vault.sys.create_or_update_policy(
            "gitops-bench", 'path "secret/data/git/hook" { capabilities = ["read"] }'
        )
        remote = Remote(tmp / "git")
        remote.commit_apps("v0", {"web": web("v0")})
        server.cli(
            "source", "add", "bench", "--repo", remote.url, "--branch", "main", "--path",
            "deploy", "--env", "bench", "--interval", "1h", "--webhook-secret",
            "secret/data/git/hook",
        )  # fmt: skip
        server.cli("sync", "bench", timeout=300)
        for n in range(1, rounds + 1):
            remote.commit_apps(f"v{n}", {"web": web(f"v{n}")})
            body = json.dumps({"ref": "refs/heads/main"}).encode()
            signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            pushed, pushed_wall = time.perf_counter(), time.time()
            answer = server.api(
                "POST",
                "/api/v1/gitops/webhook/bench",
                token="",
                content=body,
                headers={"X-Hub-Signature-256": signature, "X-GitHub-Delivery": str(uuid.uuid4())},
            )
            assert answer.status_code == 202, answer.text
            while not answers(server, f"v{n}"):
                time.sleep(0.005)
            samples.append(time.perf_counter() - pushed)
            newest = server.api("GET", "/api/v1/gitops/envs/bench/history?limit=1").json()[0]
            overhead.append(newest["created"] - pushed_wall)
            rollout.append(newest["duration"] or 0.0)
        # The app's own start time for the same change, without GitOps: apply a folder.
        folder = tmp / "plain"
        for n in range(1, min(rounds, 10) + 1):
            write_repo(folder, {"web": {"env": {"VERSION": f"p{n}"}}})
            (folder / "environments" / "plain").mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            server.cli("apply", str(folder), "--yes", "--env", "plain")
            while not answers_plain(server, f"p{n}"):
                time.sleep(0.005)
            baseline.append(time.perf_counter() - started)
    p = percentiles(samples)
    b = percentiles(baseline)
    print(
        json.dumps(
            {
                "bench": "gitops_push_to_healthy_seconds",
                **p,
                "webhook_to_revision_seconds": percentiles(overhead),
                "revision_rollout_seconds": percentiles(rollout),
                "cli_apply_to_healthy_seconds": b,
            },
            indent=2,
        )
    )


def answers_plain(server: object, version: str) -> bool:
    try:
        rows = server.status()["apps"]  # type: ignore[attr-defined]
        app = next(a for a in rows if a["environment"] == "plain")
        if app["ready"] < app["desired"]:
            return False
        return bool(httpx.get(instance_url(app), timeout=1).json()["version"] == version)
    except (httpx.HTTPError, StopIteration, KeyError, IndexError):
        return False


if __name__ == "__main__":
    main()
