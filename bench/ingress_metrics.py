"""Cost of per-route ingress metrics: ``wrk`` through Socle's nginx with the access records
off and on (:mod:`socle.observe.metrics.ingress`), alternated to even out noise.

Each round starts the ingress without, then with, ``Listen.metrics_log`` and runs
``wrk -t2 -c32`` (saturation) and ``wrk -t1 -c1`` (added latency) against one granian app.
With records on, the receiving control plane (this process' event loop, fed while wrk runs
in a thread) counts them: ````records_counted`` against ``requests`` (nginx's own access log)`` says how many were kept, and the
CPU this process spent is the control plane's cost per request. Prints JSON. Run:
``.venv/bin/python bench/ingress_metrics.py [seconds per wrk run] [rounds]`` (about 45 s
with the defaults 5 and 2).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from _harness import ROOT
from ingress import Endpoints, backend, free_port, process
from ingress import wrk as wrk_stats

from socle.network.ingress import AppPorts, Endpoint, Ingress, Listen, Nginx
from socle.network.ingress.nginx import worker_user
from socle.observe.metrics.ingress import IngressTraffic


def wrk(url: str, seconds: int, host: str, connections: int = 32) -> dict[str, float]:
    return wrk_stats(url, seconds, host, connections)


def lines(path: Path) -> int:
    """Requests nginx logged in its ordinary access log (the exact count to compare with)."""
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_round(tmp: Path, port: int, seconds: int, metrics: bool) -> dict[str, object]:
    endpoints = Endpoints()
    endpoints.set([Endpoint("web", "web-a", "127.0.0.1", {"http": port}, "bench")])
    prefix, temp = tmp / "ingress", tmp / "nginx-tmp"
    user = worker_user()
    listen = Listen(
        http=("127.0.0.1", free_port()),
        https=("127.0.0.1", free_port()),
        prefix=prefix,
        temp=temp,
        user=user,
        metrics_log=prefix / "logs" / "metrics.log" if metrics else None,
    )
    nginx = Nginx(prefix, temp=temp)
    ingress = Ingress(
        nginx, listen, endpoints, routes=dict, apps=lambda: [AppPorts("web", "bench", ("http",))]
    )
    traffic: IngressTraffic | None = None
    if metrics:
        traffic = IngressTraffic(
            prefix / "logs" / "metrics.log", ingress.route_labels, reopen=nginx.reopen_logs
        )
        await traffic.start()
    await ingress.start()
    url = f"http://127.0.0.1:{listen.http[1]}/"
    host = "web.bench.localhost"
    access = prefix / "logs" / "access.log"
    try:
        before = lines(access)
        cpu = _cpu()
        sat = await asyncio.to_thread(wrk, url, seconds, host)
        one = await asyncio.to_thread(wrk, url, seconds, host, 1)
        await asyncio.sleep(2.5)  # nginx flushes its buffer each second, Socle polls each second
        cpu = _cpu() - cpu
        out: dict[str, object] = {"c32": sat, "c1": one}
        if traffic is not None:
            requests = lines(access) - before
            stats = traffic._stats.get("default-web")
            counted = sum(stats.codes.values()) if stats else 0
            out["records_counted"] = counted
            out["requests"] = requests
            out["control_plane_cpu_s"] = round(cpu, 2)
            out["control_plane_cpu_us_per_request"] = round(cpu / max(counted, 1) * 1e6, 1)
        return out
    finally:
        await ingress.stop(stop_nginx=True)
        if traffic is not None:
            await traffic.close()


async def run(seconds: int, rounds: int) -> dict[str, object]:
    results: dict[str, object] = {"wrk_seconds": seconds, "rounds": rounds, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="socle-bench-ingress-metrics-") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        argv, port, env = backend(tmp, "a")
        runs: dict[str, list[dict[str, object]]] = {"off": [], "on": []}
        with process(argv, port, env):
            for _ in range(rounds):
                for mode in ("off", "on"):
                    runs[mode].append(await one_round(tmp, port, seconds, mode == "on"))

        def median(mode: str, conns: str, key: str) -> float:
            return statistics.median(float(r[conns][key]) for r in runs[mode])  # type: ignore[index]

        for conns in ("c32", "c1"):
            off_rps, on_rps = median("off", conns, "rps"), median("on", conns, "rps")
            off_p50, on_p50 = median("off", conns, "p50_ms"), median("on", conns, "p50_ms")
            results[conns] = {
                "rps_off": off_rps,
                "rps_on": on_rps,
                "rps_change_pct": round((on_rps / off_rps - 1) * 100, 1),
                "p50_ms_off": off_p50,
                "p50_ms_on": on_p50,
                "p99_ms_off": median("off", conns, "p99_ms"),
                "p99_ms_on": median("on", conns, "p99_ms"),
            }
        results["runs"] = runs
    return results


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    sys.path.insert(0, str(ROOT / "src"))
    print(json.dumps(asyncio.run(run(seconds, rounds)), indent=2))


if __name__ == "__main__":
    main()
