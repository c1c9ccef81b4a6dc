"""(b) `plan` time with 1,000 and 10,000 App manifests: no change, and 1% changed.

Apps have ``replicas: 0`` so that applying the baseline starts no process. Reports the
server-side plan time (load + validate + digest + diff) and the CLI's wall time.
Target: plan of 10,000 manifests <= 1 s. Prints JSON.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import yaml
from _harness import socle_server

FILES = 100


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


def measure(server: object, repo: Path, rounds: int = 5) -> dict[str, float | int]:
    server_times, cli_times = [], []
    changes = 0
    for _ in range(rounds):
        started = time.perf_counter()
        result = server.cli("plan", str(repo), "--json", check=False, timeout=600)  # type: ignore[attr-defined]
        cli_times.append(time.perf_counter() - started)
        data = json.loads(result.stdout)
        server_times.append(data["seconds"])
        changes = len(data["changes"])
    return {
        "changes": changes,
        "server_seconds_p50": round(statistics.median(server_times), 3),
        "server_seconds_min": round(min(server_times), 3),
        "cli_seconds_p50": round(statistics.median(cli_times), 3),
    }


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    results = []
    for count in counts:
        with socle_server() as (server, tmp):
            repo = tmp / "repo"
            write(repo, count)
            started = time.perf_counter()
            server.cli("apply", str(repo), "--yes", timeout=1800)
            baseline = time.perf_counter() - started
            unchanged = measure(server, repo)
            write(repo, count, changed=count // 100)
            changed = measure(server, repo)
            results.append(
                {
                    "apps": count,
                    "baseline_apply_seconds": round(baseline, 2),
                    "no_change": unchanged,
                    "one_percent_changed": changed,
                }
            )
    print(json.dumps({"bench": "plan_scale", "results": results}, indent=2))


if __name__ == "__main__":
    main()
