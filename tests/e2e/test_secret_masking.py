"""A secret an app misuses never shows up in the server's log, status, history or CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo
from tests.e2e.test_secrets_apps import grep_home, vault

SECRET_PATH = "/opt/s3cr3t-path-7f3a9c"
ECHOED = "echoed-secret-51be"
TALKER = (
    "import os, sys, time\n"
    "print('my secret is', os.environ['ECHO'], flush=True)\n"
    "time.sleep(3600)\n"
)


def test_a_secret_used_as_path_is_masked_everywhere(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    client = vault(dev_server)
    client.secrets.kv.v2.create_or_update_secret(
        "db",
        secret={"path": SECRET_PATH, "nul": "before\x00after-nul-value", "echo": ECHOED},
        mount_point="secret",
    )
    client.sys.create_or_update_policy(
        "app-web", 'path "secret/data/db" { capabilities = ["read"] }'
    )
    for app in ("nul", "talker"):
        client.sys.create_or_update_policy(
            f"app-{app}", 'path "secret/data/db" { capabilities = ["read"] }'
        )
    repo = write_repo(
        tmp_path / "repo",
        {
            # "python3" is looked up on PATH, which is the secret: the start fails.
            "web": {
                "run": {"command": ["python3", "app.py"], "workdir": "web"},
                "env": {"PATH": {"secret": "secret/data/db#path"}},
            },
            "nul": {"env": {"TOKEN": {"secret": "secret/data/db#nul"}}},
            # An app that prints its own secret: `socle logs` masks it, as CI systems do.
            "talker": {
                "run": {"command": [sys.executable, "-c", TALKER]},
                "env": {"ECHO": {"secret": "secret/data/db#echo"}},
                "health": None,
            },
        },
    )
    dev_server.cli("apply", str(repo), "--yes", "--no-wait")

    def failed(words: str) -> str:
        # Where the reason lands: the server's log today, the app's status and revision
        # once start failures are accounted for; all of them are checked below.
        texts = [dev_server.log.read_text(errors="replace"), json.dumps(dev_server.status())]
        texts.append(dev_server.api("GET", "/api/v1/revisions").text)
        return next((t for t in texts if words in t), "")

    wait_for(lambda: failed("not found on PATH"), 60, "the start to fail")
    wait_for(
        lambda: failed("environment variable TOKEN holds a NUL byte"),
        60,
        "the NUL secret to be refused",
    )

    talked = wait_for(
        lambda: (out := dev_server.cli("logs", "talker").stdout) and "my secret is" in out and out,
        60,
        "the talker's line",
    )
    assert ECHOED not in talked and "my secret is ****" in talked

    outputs = [
        json.dumps(dev_server.status()),
        dev_server.api("GET", "/api/v1/revisions").text,
        dev_server.cli("status").stdout,
        dev_server.cli("history").stdout,
        dev_server.log.read_text(errors="replace"),
    ]
    for text in outputs:
        assert SECRET_PATH not in text
        assert "after-nul-value" not in text
    assert grep_home(dev_server, SECRET_PATH) == []
