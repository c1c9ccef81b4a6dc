"""Observe: the per-instance exporter's cost, and crash loop -> alert -> remediation time.

``python bench/observe_scrape.py [INSTANCES]`` (default 1000): the exporter page of
INSTANCES instances, built as Prometheus' scrape of ``/metrics/instances`` builds it. The
instances are real: 20 sleeping processes, each in a memory cgroup of its own, stand for
INSTANCES entries (entry i reads process i % 20), so every entry costs the same file reads
as a real instance (cgroup.procs, memory.usage/limit, /proc/PID/stat, status, fd).
Reports wall and CPU time per scrape and the CPU share at the default 10 s scrape interval.

``python bench/observe_scrape.py --latency``: a real control plane with its embedded
Prometheus and Alertmanager at default settings (the per-instance exporter scraped and rules
evaluated every 5 s, other targets every 10 s), an app
that crashes at start and an AlertRule on its restarts with ``actions: [restart]``: time
from the apply to the alert firing in Alertmanager, and to the remediation recorded.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from _harness import percentiles, socle_server

from socle.observe.metrics.instances import instance_exposition
from socle.runtime.driver import InstanceResources, InstanceState, InstanceStatus
from socle.runtime.local.cgroups import own_cgroup

PROCESSES = 20
MEMORY_ROOT = Path("/sys/fs/cgroup/memory")


def exporter(instances: int, rounds: int = 10) -> dict[str, object]:
    own = own_cgroup("memory") or "/"
    parent = MEMORY_ROOT / own.lstrip("/") / f"socle-bench-{os.getpid()}"
    sleepers: list[subprocess.Popen[bytes]] = []
    folders: list[Path] = []
    try:
        for n in range(PROCESSES):
            proc = subprocess.Popen(["sleep", "600"])
            sleepers.append(proc)
            folder = parent / f"i{n}"
            try:
                folder.mkdir(parents=True)
                (folder / "cgroup.procs").write_text(str(proc.pid))
                folders.append(folder)
            except OSError:
                folders.append(Path("/nonexistent"))
        entries = []
        for i in range(instances):
            proc = sleepers[i % PROCESSES]
            status = InstanceStatus(
                f"app{i // 10}-{i % 10}",
                f"app{i // 10}",
                "r1",
                i % 10,
                InstanceState.RUNNING,
                True,
                proc.pid,
                "127.0.0.1",
                {"http": 10000 + i},
                0,
                None,
                None,
                None,
                "bench",
                environment="prod",
            )
            cgroups = (str(folders[i % PROCESSES]),) if folders[i % PROCESSES].exists() else ()
            entries.append(InstanceResources(status, cgroups, 0.002, True))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        walls: list[float] = []
        cpus: list[float] = []
        size = 0
        for _ in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            page = instance_exposition(lambda: entries)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            size = len(page)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu_p50 = percentiles(cpus)["p50"]
        return {
            "bench": "instance_exporter_scrape",
            "instances": instances,
            "page_bytes": size,
            "wall_seconds": percentiles(walls),
            "cpu_seconds": percentiles(cpus),
            "cpu_share_at_10s_interval": round(cpu_p50 / 10, 4),
            "max_rss_growth_kib": rss_after - rss_before,
        }
    finally:
        for proc in sleepers:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        for folder in folders:
            if folder.exists():
                folder.rmdir()
        if parent.exists():
            parent.rmdir()


CRASHY = "import sys, time\ntime.sleep(0.5)\nsys.exit(3)\n"


def latency() -> dict[str, object]:
    env = {"SOCLE_PROMETHEUS": "embedded", "SOCLE_ALERTMANAGER": "embedded"}
    with socle_server(env=env) as (server, tmp):
        repo = tmp / "repo"
        (repo / "crashy").mkdir(parents=True)
        (repo / "crashy" / "app.py").write_text(CRASHY)
        app = {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": "crashy"},
            "spec": {
                "run": {"command": [sys.executable, "app.py"], "workdir": "crashy"},
                "update": {"autoRollback": False},
            },
        }
        rule = {
            "apiVersion": "socle/v1",
            "kind": "AlertRule",
            "metadata": {"name": "crashy-crashloop"},
            "spec": {
                "expr": 'increase(socle_instance_restarts_total{app="crashy"}[1m]) >= 2',
                "severity": "critical",
                "actions": ["restart"],
            },
        }
        (repo / "app.yaml").write_text(yaml.safe_dump(app))
        (repo / "rule.yaml").write_text(yaml.safe_dump(rule))
        started = time.monotonic()
        server.cli("apply", str(repo), "--yes", check=False)
        fired = remediated = crashed = None
        first: dict[str, object] = {}
        deadline = started + 180
        while time.monotonic() < deadline and remediated is None:
            if crashed is None:
                apps = server.status().get("apps") or []
                if any(i["restarts"] >= 1 for a in apps for i in a.get("instances") or []):
                    crashed = time.monotonic() - started
            data = server.api("GET", "/api/v1/alerts").json()
            if fired is None and any(
                a["labels"].get("alertname") == "crashy-crashloop" for a in data["alerts"]
            ):
                fired = time.monotonic() - started
            if data["remediations"]:
                remediated = time.monotonic() - started
                first = data["remediations"][0]
            time.sleep(0.5)
        return {
            "bench": "crashloop_to_alert_to_remediation_seconds",
            "settings": "defaults (instance exporter scrape and rule evaluation every 5 s, "
            "other scrapes 10 s, group_wait 2 s)",
            "apply_to_first_restart": None if crashed is None else round(crashed, 1),
            "apply_to_alert_firing": None if fired is None else round(fired, 1),
            "apply_to_remediation": None if remediated is None else round(remediated, 1),
            "first_restart_to_remediation": None
            if crashed is None or remediated is None
            else round(remediated - crashed, 1),
            "remediation": {k: first.get(k) for k in ("action", "result", "message")},
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }


def main() -> None:
    if "--latency" in sys.argv:
        print(json.dumps(latency(), indent=2))
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps(exporter(count), indent=2))


if __name__ == "__main__":
    main()
