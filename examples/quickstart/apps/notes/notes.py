"""The quickstart notes service: a stateful app whose data lives on a Volume.

Standard library only (``http.server`` + ``sqlite3``). The SQLite file is in ``$NOTES_DIR``
(the Volume ``notes-data`` mounted at ``/data``), so notes survive new releases, rollbacks,
restarts and a crash of the control plane; the release folder itself is read-only.

    GET  /healthz      200 once the database answers
    GET  / or /notes   every note, newest first
    POST /notes        body = the note's text (UTF-8, at most 4 KiB); answers its id
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

DB_PATH = Path(os.environ.get("NOTES_DIR", "/data")) / "notes.db"
MAX_NOTE = 4096
LOCK = threading.Lock()


def connect() -> sqlite3.Connection:
    db = sqlite3.connect(DB_PATH, timeout=10, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS notes ("
        "id INTEGER PRIMARY KEY, text TEXT NOT NULL, created TEXT DEFAULT CURRENT_TIMESTAMP)"
    )
    db.commit()
    return db


DB = connect()


class Handler(BaseHTTPRequestHandler):
    server_version = "quickstart-notes/1.0"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            with LOCK:
                DB.execute("SELECT 1").fetchone()
            self._reply(200, {"status": "ok"})
        elif self.path in ("/", "/notes"):
            with LOCK:
                rows = DB.execute(
                    "SELECT id, text, created FROM notes ORDER BY id DESC"
                ).fetchall()
            self._reply(200, {"notes": [{"id": i, "text": t, "created": c} for i, t, c in rows]})
        else:
            self._reply(404, {"error": "not found", "path": self.path})

    def do_POST(self) -> None:
        if self.path != "/notes":
            self._reply(404, {"error": "not found", "path": self.path})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_NOTE:
            self._reply(400, {"error": f"a note is 1 to {MAX_NOTE} bytes"})
            return
        try:
            text = self.rfile.read(length).decode("utf-8")
        except UnicodeDecodeError:
            self._reply(400, {"error": "a note is UTF-8 text"})
            return
        with LOCK:
            cursor = DB.execute("INSERT INTO notes(text) VALUES (?)", (text,))
            DB.commit()
        self._reply(201, {"id": cursor.lastrowid})

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {fmt % args}\n")
        sys.stdout.flush()


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"notes listening on 127.0.0.1:{server.server_port}, data in {DB_PATH}", flush=True)
    server.serve_forever()
    with LOCK:
        DB.close()


if __name__ == "__main__":
    main()
