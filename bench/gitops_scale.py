"""GitOps at scale: (b) 1,000 apps in one repository, one commit changing one app; (c) the
steady-state CPU of the sync loop with 50 sources polling.

A real control plane (``socle server`` in a temporary SOCLE_HOME) and real bare Git
repositories served over ``file://``. CPU is read from ``/proc/PID/stat`` of the control
plane: ``utime + stime`` (its own threads) and ``cutime + cstime`` (the ``git`` processes
it forked and reaped), in seconds.

(b) The 1,000 apps are written as :mod:`plan_scale` writes them (100 files of 10 apps,
``replicas: 0``): 1,000 real processes cannot run on 2 shared cores, and the figure is about
the GitOps path (fetch, checkout, load, plan, apply, revision), not about process start.
One Source syncs them (first sync timed apart), then ROUNDS commits each change the
environment of one app; each is pushed, then ``POST /api/v1/gitops/sync`` (what
``socle sync ENV`` calls; it answers when the revision is done) is timed from the push to
the answer, with the control plane's CPU over the same span. Target: <= 10 s (Flux's
published benchmark: 1,000 Kustomizations in about 4 minutes on 16 cores).

(c) 50 sources (one small repository, 50 environments, one app with ``replicas: 0``
each) first synced, then left alone for WINDOW seconds twice: once with their poll
interval at 1 h (only the loop's fixed costs: drift checks, idle), once at a short
interval (``--interval``, default 1 s). The CPU per poll is the difference divided by the
polls made; scaled to the default 60 s interval it gives the sync loop's share of a core.

Usage: ``python bench/gitops_scale.py [--apps N] [--sources N] [--window S] [--only b|c]
[--profile PREFIX]``.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from _harness import percentiles, socle_server
from plan_scale import write

from tests.e2e.gitops_repo import Remote
from tests.e2e.socle_fixture import SocleServer, write_repo

ROUNDS = 5
WINDOW = 20.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``: its own, and that of the children it reaped (git)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    return {"own": own, "children": children, "total": own + children}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 3) for k in after}


def call(server: SocleServer, method: str, path: str, body: Any, timeout: float = 1800) -> Any:
    response = httpx.request(
        method,
        server.url + path,
        json=body,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=timeout,
        verify=False,
    )
    if response.status_code >= 400:
        raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def add_source(server: SocleServer, name: str, url: str, env: str, interval: str) -> None:
    body = {"name": name, "repo": url, "branch": "main", "path": "deploy", "env": env,
            "interval": interval, "replace": True}  # fmt: skip
    call(server, "POST", "/api/v1/gitops/sources", body)


def sync(server: SocleServer, env: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = call(server, "POST", "/api/v1/gitops/sync", {"env": env})
    for row in rows:
        if row["state"] != "synced":
            raise AssertionError(f"sync of {env}: {row['state']}: {row['reason']}")
    return rows


def bench_b(apps: int) -> dict[str, Any]:
    with socle_server() as (server, tmp):
        assert server.proc is not None
        pid = server.proc.pid
        remote = Remote(tmp / "git")
        write(remote.work / "deploy", apps)
        remote.commit("base")
        add_source(server, "big", remote.url, "big", "1h")
        before, started = cpu(pid), time.perf_counter()
        sync(server, "big")
        first = {"seconds": round(time.perf_counter() - started, 3),
                 "cpu_seconds": delta(cpu(pid), before)}  # fmt: skip
        walls: list[float] = []
        cpus: list[float] = []
        spy = profiled(pid, "b")
        for n in range(1, ROUNDS + 1):
            # app00000's MODE flips each round: one app's desired state changes.
            write(remote.work / "deploy", apps, changed=n % 2)
            before, started = cpu(pid), time.perf_counter()
            remote.commit(f"change {n}")
            rows = sync(server, "big")
            walls.append(time.perf_counter() - started)
            cpus.append(delta(cpu(pid), before)["total"])
            assert rows[0]["commit"]["message"] == f"change {n}", rows
        stop_profile(spy)
        # Nothing changes now: what the control plane spends keeping 1,000 apps in check
        # (the drift check plans the source every 10 s; the poll interval is 1 h).
        quiet = idle_cpu(pid, WINDOW, "b-quiet")
        history = call(server, "GET", "/api/v1/gitops/envs/big/history?limit=1", None)
        return {
            "apps": apps,
            "replicas": 0,
            "first_sync": first,
            "commit_to_converged_seconds": percentiles(walls),
            "cpu_seconds_per_change": percentiles(cpus),
            "quiet_after_sync": quiet,
            "last_revision_counts": history[0]["counts"],
            "target_seconds": 10,
        }


PROFILE: Path | None = None
"""``--profile FILE``: py-spy samples the control plane over each measured span
(``FILE.b.txt``, ``FILE.c.txt``, collapsed stacks; py-spy from PATH or ``$PY_SPY``)."""


def profiled(pid: int, tag: str) -> subprocess.Popen[bytes] | None:
    if PROFILE is None:
        return None
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy"
    out = f"{PROFILE}.{tag}.txt"
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
         "--nonblocking", "--output", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profile(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def idle_cpu(pid: int, window: float, tag: str = "") -> dict[str, float]:
    spy = profiled(pid, tag) if tag else None
    before = cpu(pid)
    time.sleep(window)
    used = delta(cpu(pid), before)
    stop_profile(spy)
    return {**used, "percent_of_core": round(100 * used["total"] / window, 2)}


def bench_c(count: int, window: float, interval: float) -> dict[str, Any]:
    with socle_server() as (server, tmp):
        assert server.proc is not None
        pid = server.proc.pid
        remote = Remote(tmp / "git")
        write_repo(remote.work / "deploy", {"web": {"replicas": 0}})
        remote.commit("base")
        envs = [f"e{i:02d}" for i in range(count)]
        for env in envs:
            add_source(server, f"s-{env}", remote.url, env, "1h")
        for env in envs:
            sync(server, env)
        quiet = idle_cpu(pid, window)
        for env in envs:
            add_source(server, f"s-{env}", remote.url, env, f"{interval:g}s")
        for env in envs:  # a replaced source syncs at once: let those first syncs pass
            sync(server, env)
        busy = idle_cpu(pid, window, "c")
        # Each source polls every interval (jitter +-10% averages out) when the loop
        # keeps up; ``lag`` says whether it did: the oldest last sync at the end.
        now = time.time()
        rows = call(server, "GET", "/api/v1/gitops/sources", None)
        lag = max(now - (r["status"]["last_sync"] or 0.0) for r in rows)
        polls = count * window / interval
        per_poll = (busy["total"] - quiet["total"]) / polls
        default = count * per_poll / 60.0
        return {
            "sources": count,
            "window_seconds": window,
            "interval_seconds": interval,
            "quiet_1h_interval": quiet,
            "polling": {**busy, "polls_expected": polls, "oldest_last_sync_seconds": round(lag, 2)},
            "cpu_seconds_per_poll": round(per_poll, 4),
            "sync_loop_percent_of_core_at_60s": round(100 * default, 3),
            "total_percent_of_core_at_60s": round(100 * default + quiet["percent_of_core"], 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--only", choices=("b", "c"))
    parser.add_argument("--profile", type=Path, help="py-spy output prefix")
    args = parser.parse_args()
    global PROFILE, WINDOW
    PROFILE, WINDOW = args.profile, args.window
    out: dict[str, Any] = {"bench": "gitops_scale"}
    if args.only in (None, "b"):
        out["b_one_change_in_1000_apps"] = bench_b(args.apps)
    if args.only in (None, "c"):
        out["c_sync_loop_steady_state"] = bench_c(args.sources, args.window, args.interval)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
