"""(d) Control-plane idle RSS and CPU with many instances running (default 200).

Targets: <= 100 MB RSS and <= 2% of one core. Prints JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from _harness import socle_server

from tests.e2e.socle_fixture import write_repo

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    instances = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    per_app = 2
    with socle_server() as (server, tmp):
        apps = {
            f"app{i:03d}": {
                "replicas": per_app,
                "health": {"http": {"path": "/healthz", "port": "http"}, "interval": "2s"},
            }
            for i in range(instances // per_app)
        }
        repo = write_repo(tmp / "repo", apps)
        started = time.perf_counter()
        server.cli("apply", str(repo), "--yes", timeout=900)
        applied = time.perf_counter() - started
        assert server.proc is not None
        pid = server.proc.pid
        time.sleep(5)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(window)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        ready = sum(a["ready"] for a in server.status()["apps"])
        print(
            json.dumps(
                {
                    "bench": "idle_control_plane",
                    "instances_ready": ready,
                    "apply_seconds": round(applied, 2),
                    "window_seconds": window,
                    "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
                    "rss_mb": round(rss_mb(pid), 1),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
