"""(b) `plan` time with 1,000 and 10,000 App manifests: no change, and 1% changed.

Apps have ``replicas: 0`` so that applying the baseline starts no process. Reports:

* ``baseline_apply_seconds``: ``socle apply --yes --no-wait`` of all the apps, then the
  revision polled (every second, over the API) until it is done. ``socle apply`` without
  ``--no-wait`` polls the whole revision and the status of every app five times a second,
  which at this scale measures the polling more than the apply;
* per plan: the server-side ``seconds`` field of the API (load + validate + digest + diff)
  and the CLI's wall time (process start, imports, HTTP, JSON);
* ``in_process``: the same plans on an engine in this process (in-memory runtime driver),
  split into load / desired states / diff / digest, with what the manifest cache reused.

"1% changed" rewrites every file (like a checkout that touches all of them) with new
content in 1% of the apps. Target: plan of 10,000 manifests <= 1 s. Prints JSON.
Usage: ``python bench/plan_scale.py [COUNT ...]`` (default 1000 10000).

``python bench/plan_scale.py --kinds [COUNT]`` (default 10000): COUNT objects of two kinds,
half Apps and half Volumes, each App mounting its own Volume (a cross-kind dependency per
App), on an in-process engine with a temp-dir volume provider. Reports the baseline apply,
*warm* plans (no change; 1% changed) and *cold* plans after a restart: the first plan of a
new engine in this process, and of a new process (imports, store open and engine start
timed apart from the plan itself), both starting from the planning caches the engine saved
at stop (:mod:`socle.engine.plancache`), and for reference a new process without them.
Targets: warm <= 1 s, cold <= 2 s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from _harness import socle_server

FILES = 100
ROUNDS = 5


def write(repo: Path, count: int, changed: int = 0) -> None:
    (repo / "web").mkdir(parents=True, exist_ok=True)
    (repo / "web" / "app.py").write_text("print('hello')\n")
    per_file = count // FILES
    for f in range(FILES):
        docs = []
        for i in range(f * per_file, (f + 1) * per_file):
            env = {"INDEX": str(i), "MODE": "changed" if i < changed else "base"}
            docs.append(
                {
                    "apiVersion": "socle/v1",
                    "kind": "App",
                    "metadata": {"name": f"app{i:05d}", "labels": {"team": f"t{i % 10}"}},
                    "spec": {
                        "replicas": 0,
                        "run": {"command": ["python3", "app.py"], "workdir": "web"},
                        "env": env,
                        "ports": [{"name": "http"}],
                        "health": {"http": {"path": "/healthz", "port": "http"}},
                        "resources": {"memory": "64Mi", "cpu": "100m"},
                    },
                }
            )
        (repo / f"apps-{f:03d}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))


def measure(server: Any, repo: Path, rounds: int = ROUNDS) -> dict[str, float | int]:
    server_times, cli_times = [], []
    changes = 0
    for _ in range(rounds):
        started = time.perf_counter()
        result = server.cli("plan", str(repo), "--json", check=False, timeout=600)
        cli_times.append(time.perf_counter() - started)
        data = json.loads(result.stdout)
        server_times.append(data["seconds"])
        changes = len(data["changes"])
    return {
        "changes": changes,
        "server_seconds_p50": round(statistics.median(server_times), 3),
        "server_seconds_min": round(min(server_times), 3),
        "server_seconds_max": round(max(server_times), 3),
        "cli_seconds_p50": round(statistics.median(cli_times), 3),
    }


def apply_baseline(server: Any, repo: Path) -> float:
    started = time.perf_counter()
    result = server.cli("apply", str(repo), "--yes", "--no-wait", "--json", timeout=1800)
    number = json.loads(result.stdout)["revision"]["number"]
    while True:
        try:
            response = server.api("GET", f"/api/v1/revisions/{number}")
        except httpx.TimeoutException:
            continue  # a busy control plane answers late: keep waiting, it is the measure
        response.raise_for_status()
        revision = response.json()
        if revision["status"] not in ("building", "rolling"):
            break
        time.sleep(1.0)
    if revision["status"] != "succeeded":
        raise AssertionError(f"baseline apply {revision['status']}: {revision['message']}")
    return time.perf_counter() - started


def in_process(count: int) -> dict[str, Any]:
    """Plans on an in-process engine, timed step by step (no HTTP, no CLI)."""
    from socle.engine.releases import ReleaseStore
    from socle.engine.service import Engine
    from socle.model.loader import load
    from socle.state.registry import open_store
    from tests.unit.engine.memdriver import MemDriver

    async def run() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="socle-bench-") as tmp:
            repo = Path(tmp) / "repo"
            write(repo, count)
            store = await open_store(Path(tmp) / "state.db")
            engine = Engine(store, MemDriver(), ReleaseStore(Path(tmp) / "releases"))
            try:
                await engine.start()
                first = await steps(engine, repo)
                _, revision = await engine.apply(repo, None, "bench")
                assert revision is not None
                while not (await engine.revisions.get(revision.number)).done:
                    await asyncio.sleep(0.2)
                unchanged = [await steps(engine, repo) for _ in range(ROUNDS)]
                write(repo, count, changed=count // 100)
                changed = [await steps(engine, repo) for _ in range(ROUNDS)]
            finally:
                await engine.stop()
                await store.close()
        return {
            "first_plan_cold_cache": first,
            "no_change_p50": _median_steps(unchanged),
            "one_percent_changed_first": changed[0],
            "one_percent_changed_p50": _median_steps(changed),
        }

    async def steps(engine: Engine, repo: Path) -> dict[str, Any]:
        cache = engine.manifest_cache
        t0 = time.perf_counter()
        await asyncio.to_thread(load, repo, None, cache=cache)
        t1 = time.perf_counter()
        stats = cache.stats
        # The engine's own plan loads again (all cache hits now): states + diff + a load.
        loaded, the_plan = await engine.plan(repo, None)
        t2 = time.perf_counter()
        loaded.digest()
        t3 = time.perf_counter()
        return {
            "load": round(t1 - t0, 4),
            "plan_after_load": round(t2 - t1, 4),
            "digest": round(t3 - t2, 4),
            "changes": len(the_plan.changes),
            "files_parsed": stats.parsed,
            "files_read_same_text": stats.text_hits,
            "objects_validated": stats.validated,
        }

    return asyncio.run(run())


def _median_steps(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def write_two_kinds(repo: Path, count: int, changed: int = 0) -> None:
    """``count`` objects: ``count // 2`` Apps, each mounting its own Volume."""
    (repo / "web").mkdir(parents=True, exist_ok=True)
    (repo / "web" / "app.py").write_text("print('hello')\n")
    half = count // 2
    per_file = max(half // FILES, 1)
    for f in range(FILES):
        docs: list[dict[str, Any]] = []
        for i in range(f * per_file, min((f + 1) * per_file, half)):
            env = {"INDEX": str(i), "MODE": "changed" if i < changed else "base"}
            docs.append(
                {
                    "apiVersion": "socle/v1",
                    "kind": "Volume",
                    "metadata": {"name": f"vol{i:05d}"},
                    "spec": {"size": "64Mi" if i < changed else "32Mi", "retain": True},
                }
            )
            docs.append(
                {
                    "apiVersion": "socle/v1",
                    "kind": "App",
                    "metadata": {"name": f"app{i:05d}", "labels": {"team": f"t{i % 10}"}},
                    "spec": {
                        "replicas": 0,
                        "run": {"command": ["python3", "app.py"], "workdir": "web"},
                        "env": env,
                        "ports": [{"name": "http"}],
                        "volumes": [{"name": f"vol{i:05d}", "mountPath": "/data"}],
                    },
                }
            )
        (repo / f"objects-{f:03d}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _cold_child(home: str, cached: bool) -> None:
    """In a new process: imports, store open, engine start and the first plan, timed."""
    t0 = time.perf_counter()
    from socle.engine.releases import ReleaseStore
    from socle.engine.service import Engine
    from socle.state.registry import open_store
    from tests.unit.engine.memdriver import MemDriver
    from tests.unit.engine.memvolumes import DirVolumes

    t1 = time.perf_counter()

    async def run() -> dict[str, Any]:
        base = Path(home)
        store = await open_store(base / "state.db")
        volumes = DirVolumes(base / "volumes")
        engine = Engine(
            store,
            MemDriver(),
            ReleaseStore(base / "releases"),
            volumes=volumes,
            cache_file=base / "plan.pickle" if cached else None,
        )
        t2 = time.perf_counter()
        await engine.start()
        t3 = time.perf_counter()
        _, the_plan = await engine.plan(base / "repo", None)
        t4 = time.perf_counter()
        _, again = await engine.plan(base / "repo", None)
        t5 = time.perf_counter()
        if cached:
            engine._cache_file = None  # measure, do not rewrite the cache
        await engine.stop()
        await store.close()
        return {
            "imports": round(t1 - t0, 3),
            "store_open": round(t2 - t1, 3),
            "engine_start": round(t3 - t2, 3),
            "first_plan": round(t4 - t3, 3),
            "second_plan": round(t5 - t4, 3),
            "changes": len(the_plan.changes) + len(again.changes),
        }

    print(json.dumps(asyncio.run(run())))


def two_kinds(count: int) -> dict[str, Any]:
    import subprocess

    from socle.engine.releases import ReleaseStore
    from socle.engine.service import Engine
    from socle.state.registry import open_store
    from tests.unit.engine.memdriver import MemDriver
    from tests.unit.engine.memvolumes import DirVolumes

    async def plan_seconds(engine: Engine, repo: Path) -> tuple[float, int]:
        started = time.perf_counter()
        loaded, the_plan = await engine.plan(repo, None)
        loaded.digest()
        return time.perf_counter() - started, len(the_plan.changes)

    async def run(base: Path) -> dict[str, Any]:
        repo = base / "repo"
        write_two_kinds(repo, count)
        store = await open_store(base / "state.db")
        volumes = DirVolumes(base / "volumes")
        cache_file = base / "plan.pickle"
        engine = Engine(
            store,
            MemDriver(),
            ReleaseStore(base / "releases"),
            volumes=volumes,
            cache_file=cache_file,
        )
        await engine.start()
        started = time.perf_counter()
        _, revision = await engine.apply(repo, None, "bench")
        assert revision is not None
        while not (await engine.revisions.get(revision.number)).done:
            await asyncio.sleep(0.2)
        baseline = time.perf_counter() - started
        status = (await engine.revisions.get(revision.number)).status
        warm = [await plan_seconds(engine, repo) for _ in range(ROUNDS)]
        write_two_kinds(repo, count, changed=count // 200)
        changed = [await plan_seconds(engine, repo) for _ in range(ROUNDS)]
        write_two_kinds(repo, count)
        await plan_seconds(engine, repo)
        t0 = time.perf_counter()
        await engine.stop()  # saves the planning caches
        stop_seconds = time.perf_counter() - t0
        # Restart in this process: a new engine that adopts the saved caches.
        engine = Engine(
            store,
            MemDriver(),
            ReleaseStore(base / "releases"),
            volumes=volumes,
            cache_file=cache_file,
        )
        t0 = time.perf_counter()
        await engine.start()
        start_seconds = time.perf_counter() - t0
        cold = await plan_seconds(engine, repo)
        await engine.stop()
        await store.close()
        return {
            "baseline_apply_seconds": round(baseline, 2),
            "baseline_status": status,
            "warm_no_change_p50": round(statistics.median(t for t, _ in warm), 3),
            "warm_no_change_changes": warm[0][1],
            "warm_one_percent_changed_p50": round(statistics.median(t for t, _ in changed), 3),
            "warm_one_percent_changed_changes": changed[0][1],
            "stop_seconds_with_cache_save": round(stop_seconds, 3),
            "plan_cache_bytes": cache_file.stat().st_size,
            "restart_engine_start_seconds": round(start_seconds, 3),
            "cold_first_plan_same_process": round(cold[0], 3),
            "cold_first_plan_changes": cold[1],
        }

    with tempfile.TemporaryDirectory(prefix="socle-bench-") as tmp:
        result = asyncio.run(run(Path(tmp)))
        for label, flag in (("cold_new_process", "cached"), ("cold_new_process_no_cache", "")):
            child = subprocess.run(
                [sys.executable, __file__, "--cold-child", tmp, flag],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            result[label] = json.loads(child.stdout)
    return {"objects": count, "apps": count // 2, "volumes": count // 2, **result}


def main() -> None:
    if sys.argv[1:2] == ["--cold-child"]:
        _cold_child(sys.argv[2], sys.argv[3:4] == ["cached"])
        return
    if sys.argv[1:2] == ["--kinds"]:
        count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
        print(json.dumps({"bench": "plan_scale_two_kinds", "result": two_kinds(count)}, indent=2))
        return
    counts = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    results = []
    for count in counts:
        with socle_server() as (server, tmp):
            repo = tmp / "repo"
            write(repo, count)
            baseline = apply_baseline(server, repo)
            unchanged = measure(server, repo)
            write(repo, count, changed=count // 100)
            changed = measure(server, repo)
        results.append(
            {
                "apps": count,
                "baseline_apply_seconds": round(baseline, 2),
                "no_change": unchanged,
                "one_percent_changed": changed,
                "in_process": in_process(count),
            }
        )
    print(json.dumps({"bench": "plan_scale", "results": results}, indent=2))


if __name__ == "__main__":
    main()
