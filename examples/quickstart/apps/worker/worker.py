"""The quickstart worker: a background loop that prints a heartbeat every 2 seconds.

The period can be changed with ``BEAT_SECONDS``.

Stands for queue consumers and schedulers: no port, no HTTP. It finishes the current beat
and exits with status 0 on SIGTERM, so Socle's stop is clean and `restart: on-failure`
does not restart it.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

stopping = threading.Event()


def stop(signum: int, frame: FrameType | None) -> None:
    print(f"received signal {signum}, stopping", flush=True)
    stopping.set()


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    instance = os.environ.get("SOCLE_INSTANCE", "worker")
    period = float(os.environ.get("BEAT_SECONDS", "2"))
    beat = 0
    while not stopping.is_set():
        beat += 1
        print(f"{instance} heartbeat {beat} (pid {os.getpid()})", flush=True)
        stopping.wait(period)
    print("bye", flush=True)


if __name__ == "__main__":
    main()
