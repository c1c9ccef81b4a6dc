"""A tiny stdlib app the runtime tests run (copied into each test's release folder).

Behaviour by environment variable:
APP_MODE=serve (default): HTTP on $PORT. /health is 200 unless ./unhealthy exists (503);
  /info returns pid, env, visible pids and hostname as JSON. SIGTERM writes
  $APP_STATE_DIR/terminated (the release is read-only in a sandbox; default ./) and exits
  0, unless APP_IGNORE_TERM=1.
APP_MODE=exit: print, then exit with APP_EXIT_CODE after APP_DELAY seconds.
APP_MODE=crash: print "boom <n>" on stderr and exit 3.
APP_MODE=spam: print "line <n>" every APP_EVERY seconds, forever.
APP_MODE=alloc: after APP_DELAY seconds, allocate APP_ALLOC_MB MiB and hold it.
"""

import http.server
import json
import os
import signal
import socket
import sys
import time

mode = os.environ.get("APP_MODE", "serve")


def on_term(signum: int, frame: object) -> None:
    with open(os.path.join(os.environ.get("APP_STATE_DIR", "."), "terminated"), "w") as handle:
        handle.write("SIGTERM")
    sys.exit(0)


if os.environ.get("APP_IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_term)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            code = 503 if os.path.exists("unhealthy") else 200
            body = b"ok" if code == 200 else b"unhealthy"
        else:
            code = 200
            info: dict[str, object] = {
                "pid": os.getpid(),
                "env": dict(os.environ),
                "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                "hostname": socket.gethostname(),
            }
            body = json.dumps(info).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if mode == "serve":
    print(f"listening on {os.environ['PORT']}", flush=True)
    server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.serve_forever()
elif mode == "exit":
    print("exiting soon", flush=True)
    time.sleep(float(os.environ.get("APP_DELAY", "0")))
    sys.exit(int(os.environ.get("APP_EXIT_CODE", "0")))
elif mode == "crash":
    print(f"boom {time.time()}", file=sys.stderr, flush=True)
    sys.exit(3)
elif mode == "spam":
    every = float(os.environ.get("APP_EVERY", "0.005"))
    n = 0
    while True:
        print(f"line {n}", flush=True)
        n += 1
        time.sleep(every)
elif mode == "alloc":
    time.sleep(float(os.environ.get("APP_DELAY", "0")))
    print("allocating", flush=True)
    block = bytearray(int(os.environ["APP_ALLOC_MB"]) * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    print("allocated", flush=True)
    time.sleep(3600)
