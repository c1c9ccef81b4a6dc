"""The README's first command, as a new user runs it: ``socle up examples/quickstart --env
dev`` starts the control plane, applies the example and waits until every app is healthy;
the URLs it prints answer; the notes service keeps a note on its Volume; ``socle down``
stops everything. Run with this process's PATH, whatever it holds (a PATH starting with
pyenv shims once broke the example's sandboxed `python3 -m venv` build step)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.socle_fixture import SOCLE, localhost_request, processes_under

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    try:
        yield home
    finally:
        for pid in processes_under(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        mounts = Path("/proc/mounts").read_text().splitlines()
        for point in sorted((line.split()[1] for line in mounts), reverse=True):
            if point.startswith(str(home) + "/"):
                subprocess.run(["umount", point], check=False, capture_output=True)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SOCLE, *args], env=env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_socle_up_quickstart_then_down(home: Path, socle_env: dict[str, str]) -> None:
    env = dict(socle_env, SOCLE_HOME=str(home))
    up = run(env, "up", str(QUICKSTART), "--env", "dev", "--listen", "127.0.0.1:0")
    assert up.returncode == 0, up.stdout + up.stderr
    urls = dict(re.findall(r"^(\w+) answers at (http://\S+)$", up.stdout, re.MULTILINE))
    assert set(urls) == {"api", "notes"}, up.stdout
    # The stable URLs through the ingress (http://APP.ENV.localhost:PORT/).
    assert all(".localhost:" in url for url in urls.values()), urls
    api = localhost_request("GET", urls["api"])
    assert api.json()["greeting"] == "hello from dev"
    note = localhost_request("POST", urls["notes"] + "notes", content=b"buy milk")
    assert note.status_code in (200, 201), note.text
    listed = localhost_request("GET", urls["notes"] + "notes").json()["notes"]
    assert [n["text"] for n in listed] == ["buy milk"]

    status = json.loads(run(env, "status", "--json").stdout)
    assert {a["name"]: a["health"] for a in status["apps"]} == {
        "api": "healthy", "notes": "healthy", "worker": "healthy"
    }  # fmt: skip
    volumes = json.loads(run(env, "volume", "list", "--json").stdout)
    assert [v["name"] for v in volumes] == ["notes-data"], volumes

    down = run(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (home / "server.json").exists()
