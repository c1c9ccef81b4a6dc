"""The quickstart API: a tiny JSON service that Socle builds, runs, health-checks and updates.

Standard library only. Listens on 127.0.0.1:$PORT (the runtime picks the port), answers
``/healthz`` for the health check and ``/`` with a greeting, and stops cleanly on SIGTERM so
rolling updates never cut a request in half.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

STARTED = time.time()


class Handler(BaseHTTPRequestHandler):
    server_version = "quickstart-api/1.0"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, {"status": "ok", "uptime": round(time.time() - STARTED, 1)})
        elif self.path == "/":
            self._reply(
                200,
                {
                    "greeting": os.environ.get("GREETING", "hello"),
                    "instance": os.environ.get("SOCLE_INSTANCE"),
                    "pid": os.getpid(),
                },
            )
        else:
            self._reply(404, {"error": "not found", "path": self.path})

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # One line per request on stdout, flushed so `socle logs` shows it at once.
        print(f"{self.address_string()} {format % args}", flush=True)


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        print(f"received signal {signum}, shutting down", flush=True)
        # shutdown() waits for serve_forever() to return, so call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on http://127.0.0.1:{port} (pid {os.getpid()})", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    print("bye", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
