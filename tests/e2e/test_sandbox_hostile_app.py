"""A hostile manifest applied like a user would (`socle apply`), against a home outside /tmp.

The app, its build step and its exec health check all try to reach what a stolen admin
token or unseal key would give: the control plane's home, host secrets, the kernel. Then a
release is modified behind Socle's back and a rollback to it is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.socle_fixture import SocleServer, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("bwrap") is None, reason="needs root and bubblewrap"
    ),
]

EVIL = textwrap.dedent(
    """
    import ctypes, json, os, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.environ["TARGET_HOME"]
    out = {"uid": os.getuid()}
    def attempt(name, fn):
        try:
            out[name] = "ok: " + repr(fn())[:100]
        except Exception as exc:
            out[name] = "denied: " + type(exc).__name__
    attempt("token", lambda: open(os.path.join(home, "admin.token")).read())
    attempt("unseal", lambda: open(os.path.join(home, "secrets-dev-unseal.key")).read())
    attempt("db", lambda: open(os.path.join(home, "socle.db"), "rb").read(16))
    attempt("shadow", lambda: open("/etc/shadow").read())
    attempt("core_pattern", lambda: open("/proc/sys/kernel/core_pattern", "w").write("|/x"))
    attempt("release", lambda: open("app.py", "a").write("# evil"))
    out["mount"] = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
    out["unshare"] = libc.unshare(0x10000000)
    print("REPORT " + json.dumps(out), flush=True)
    while True:
        time.sleep(1)
    """
)
BUILD = textwrap.dedent(
    """
    import os, sys
    home = os.environ["TARGET_HOME"]
    for path in (os.path.join(home, "pwned"), "/etc/pwned", "/root/pwned"):
        try:
            open(path, "w").write("x")
            print("ESCAPED", path)
        except OSError:
            print("contained", path)
    open("built.txt", "w").write(str(os.getuid()))
    """
)
CHECK = "#!/bin/sh\nid -u > /dev/null && test -f built.txt\n"


@pytest.fixture
def outside_home() -> Iterator[Path]:
    home = Path("/var/tmp") / f"socle-test-{uuid.uuid4().hex[:8]}"
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def hostile_server(outside_home: Path) -> Iterator[SocleServer]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCLE_", "VAULT_"))}
    env["SOCLE_HOME"] = str(outside_home)
    srv = SocleServer(home=outside_home, env=env, args=("--dev",))
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def write_evil_repo(root: Path, home: Path, version: str) -> Path:
    (root / "evil").mkdir(parents=True, exist_ok=True)
    (root / "evil" / "app.py").write_text(EVIL + f"# {version}\n")
    (root / "evil" / "build.py").write_text(BUILD)
    (root / "evil" / "check.sh").write_text(CHECK)
    (root / "evil" / "check.sh").chmod(0o755)
    doc: dict[str, Any] = {
        "apiVersion": "socle/v1",
        "kind": "App",
        "metadata": {"name": "evil"},
        "spec": {
            "build": [{"command": [sys.executable, "build.py"], "env": {"TARGET_HOME": str(home)}}],
            "run": {"command": [sys.executable, "app.py"], "workdir": "evil"},
            "env": {"TARGET_HOME": str(home)},
            "health": {"exec": {"command": ["./check.sh"]}, "interval": "1s"},
            "update": {"progressDeadlineSeconds": "60s"},
        },
    }
    (root / "apps.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def report(server: SocleServer) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        logs = server.cli("logs", "evil").stdout
        for line in logs.splitlines():
            if "REPORT " in line:
                return dict(json.loads(line.split("REPORT ", 1)[1]))
        return None

    result: dict[str, Any] = wait_for(found, 30, "the hostile app's report")
    return result


def test_hostile_manifest_is_contained(
    hostile_server: SocleServer, outside_home: Path, tmp_path: Path
) -> None:
    core = Path("/proc/sys/kernel/core_pattern").read_text()
    repo = write_evil_repo(tmp_path / "repo", outside_home, "v1")
    hostile_server.cli("apply", str(repo), "--yes", timeout=180)

    status = json.loads(hostile_server.cli("status", "--json").stdout)
    protections = status["isolation"]["protections"]
    for name in ("read_only_code", "non_root", "syscall_filter", "hidden_host_secrets"):
        assert protections[name] is True, name
    instance = status["apps"][0]["instances"][0]
    uid = instance["uid"]
    assert instance["ready"] and uid >= 200_000
    assert str(uid) in hostile_server.cli("status").stdout

    got = report(hostile_server)
    assert got["uid"] == uid
    for name in ("token", "unseal", "db", "shadow", "core_pattern", "release"):
        assert got[name].startswith("denied"), (name, got[name])
    assert got["mount"] == -1 and got["unshare"] == -1
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core
    assert not (outside_home / "pwned").exists() and not Path("/etc/pwned").exists()
    release = status["apps"][0]["release"]
    log = (outside_home / "releases" / "evil" / f"{release}.build.log").read_text()
    assert "ESCAPED" not in log and log.count("contained") == 3

    # v2, then the kept v1 release is modified behind Socle's back: never run again.
    hostile_server.cli("apply", str(write_evil_repo(repo, outside_home, "v2")), "--yes")
    v1 = outside_home / "releases" / "evil" / release
    (v1 / "app.py").write_text("print('tampered')\n")
    refused = hostile_server.cli("rollback", "1", "--yes", check=False)
    assert refused.returncode != 0
    assert "no longer kept" in refused.stdout + refused.stderr
