"""(c) Time from `kill -9` of an instance to that instance healthy again.

Target: first restart after a crash healthy in <= 1 s. Prints JSON percentiles.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import httpx
from _harness import percentiles, socle_server

from tests.e2e.socle_fixture import instance_url, write_repo


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    samples: list[float] = []
    with socle_server() as (server, tmp):
        repo = write_repo(tmp / "repo", {"web": {}})
        server.cli("apply", str(repo), "--yes")
        for _ in range(rounds):
            app = server.app("web")
            pid = app["instances"][0]["pid"]
            restarts = app["instances"][0]["restarts"]
            os.kill(pid, signal.SIGKILL)
            killed = time.perf_counter()
            while True:
                inst = server.app("web")["instances"][0]
                if inst["restarts"] > restarts and inst["ready"]:
                    try:
                        new_url = instance_url(server.app("web"))
                        if httpx.get(new_url, timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                time.sleep(0.005)
            samples.append(time.perf_counter() - killed)
            time.sleep(11)  # let the backoff reset, so every round is a "first restart"
    print(json.dumps({"bench": "kill9_to_healthy_seconds", **percentiles(samples)}, indent=2))


if __name__ == "__main__":
    main()
