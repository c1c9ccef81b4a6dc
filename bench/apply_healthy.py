"""(a) Time from `apply` to every replica healthy, for 1 app and for 100 apps.

Target: 100 trivial apps applied and healthy in <= 15 s. Prints JSON.
"""

from __future__ import annotations

import json
import sys
import time

from _harness import socle_server

from tests.e2e.socle_fixture import write_repo


def run(count: int) -> dict[str, float | int]:
    with socle_server() as (server, tmp):
        repo = write_repo(tmp / "repo", {f"app{i:03d}": {} for i in range(count)})
        started = time.perf_counter()
        server.cli("apply", str(repo), "--yes", timeout=600)
        elapsed = time.perf_counter() - started
        status = server.status()
        ready = sum(a["ready"] for a in status["apps"])
        return {"apps": count, "ready_instances": ready, "seconds": round(elapsed, 3)}


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [1, 100]
    print(json.dumps({"bench": "apply_to_healthy", "results": [run(n) for n in counts]}, indent=2))


if __name__ == "__main__":
    main()
