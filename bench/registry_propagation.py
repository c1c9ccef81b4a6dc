"""(b) Service registry propagation: healthy -> registered, failed -> gone.

A real control plane runs one app; a client follows ``/api/v1/services/web`` with blocking
queries (as middleware would). Each round kills the instance (``kill -9``) and measures

- gone: from the kill to the first answer without the instance (the runtime sees the exit,
  the registry drops it, the blocking query returns);
- registered: from the restarted instance's ``ready_since`` (when the runtime saw its health
  check pass) to the first answer that lists it again.

Target: <= 1 s each. Prints JSON percentiles (seconds).

    python bench/registry_propagation.py [ROUNDS=10]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import httpx
from _harness import percentiles, socle_server

from tests.e2e.socle_fixture import write_repo


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    gone: list[float] = []
    registered: list[float] = []
    with socle_server() as (server, tmp):
        repo = write_repo(tmp / "repo", {"web": {"health": {
            "http": {"path": "/healthz", "port": "http"}, "interval": "200ms", "timeout": "200ms"}}})  # fmt: skip
        server.cli("apply", str(repo), "--yes")
        headers = {"Authorization": f"Bearer {server.token}"}
        http = httpx.Client(base_url=server.url, headers=headers, timeout=120)

        def follow(index: int) -> dict[str, Any]:
            answer: dict[str, Any] = http.get(
                "/api/v1/services/web", params={"index": index, "wait": "60s"}
            ).json()
            return answer

        state = http.get("/api/v1/services/web").json()
        for _ in range(rounds):
            while not state["instances"]:
                state = follow(state["index"])
            victim = state["instances"][0]["instance"]
            pid = server.app("web")["instances"][0]["pid"]
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            while any(i["instance"] == victim for i in state["instances"]):
                state = follow(state["index"])
            gone.append(time.time() - killed)
            while not state["instances"]:
                state = follow(state["index"])
            seen = time.time()
            ready_since = server.app("web")["instances"][0]["ready_since"]
            registered.append(seen - ready_since)
        http.close()
    print(
        json.dumps(
            {
                "bench": "registry_propagation",
                "rounds": rounds,
                "failed_to_gone_s": percentiles(gone),
                "healthy_to_registered_s": percentiles(registered),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
