"""An app that prints terminal escape sequences cannot drive the operator's terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo

NOISY = (
    "import sys, time\n"
    "sys.stdout.write('title \\x1b]0;pwned\\x07 clear \\x1b[2J c1 \\x9b31m bidi \\u202e end\\n')\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write('err \\x1b[31mred\\x1b[0m\\n'); sys.stderr.flush()\n"
    "time.sleep(3600)\n"
)


def test_logs_and_status_show_escapes_as_text(server: SocleServer, tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path / "repo",
        {"noisy": {"run": {"command": [sys.executable, "-c", NOISY]}, "health": None}},
    )
    server.cli("apply", str(repo), "--yes")

    def printed() -> str:
        out = server.cli("logs", "noisy").stdout
        return out if "end" in out and "red" in out else ""

    logs = wait_for(printed, 30, "the app's lines")
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in logs
    assert "\\x1b]0;pwned\\x07" in logs and "\\x1b[31mred" in logs
    # --json keeps the exact text for programs.
    lines = [json.loads(x) for x in server.cli("logs", "noisy", "--json").stdout.splitlines()]
    assert any("\x1b]0;pwned\x07" in line["text"] for line in lines)

    for command in (("status",), ("history",)):
        out = server.cli(*command).stdout
        assert "\x1b" not in out
    status = server.cli("status").stdout
    assert "noisy" in status
