"""Credentials reach git only through its environment (never argv), SSH keys through a
0600 file that is gone after the command, and errors never show them."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from socle.gitops.git import Credentials, Mirror

TOKEN = "ghp_very_secret_token_123"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"


def test_token_goes_in_an_extra_header_through_the_environment(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "m", "https://git.example/r.git", Credentials(token=TOKEN))
    with contextlib.ExitStack() as stack:
        env = mirror._env(stack)
    keys = {env[k] for k in env if k.startswith("GIT_CONFIG_KEY_")}
    assert "http.extraHeader" in keys and "protocol.ext.allow" in keys
    header = next(v for k, v in env.items() if k.startswith("GIT_CONFIG_VALUE_") and "Basic" in v)
    assert TOKEN not in header, "base64 of user:token, not the token itself"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert "SOCLE" not in " ".join(env), "the control plane's settings do not leak to git"


def test_ssh_key_is_a_private_file_removed_afterwards(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "m", "ssh://git@h/r.git", Credentials(ssh_key=KEY))
    with contextlib.ExitStack() as stack:
        env = mirror._env(stack)
        key = Path(env["GIT_SSH_COMMAND"].split(" -i ")[1].split()[0])
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        assert key.read_text().strip() == KEY
        assert KEY not in env["GIT_SSH_COMMAND"]
    assert not key.exists() and not key.parent.exists()


def test_errors_are_scrubbed(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "m", f"https://user:{TOKEN}@h/r.git", Credentials(token=TOKEN))
    text = mirror.scrub(f"fatal: could not read from https://user:{TOKEN}@h/r.git ({TOKEN})")
    assert TOKEN not in text and "****" in text
    assert repr(Credentials(token=TOKEN)) == "Credentials(****)"
    assert os.environ.get("GIT_DIR") is None
