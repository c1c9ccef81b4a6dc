"""TLS for anything beyond loopback: refused without it, served and verified with it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.socle_fixture import SOCLE, SocleServer
from tests.support.certs import write_self_signed


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert_path, key_path = tmp_path / "api.pem", tmp_path / "api.key"
    write_self_signed(cert_path, key_path, "127.0.0.1")
    return cert_path, key_path


def test_listening_beyond_loopback_needs_tls(socle_env: dict[str, str], tmp_path: Path) -> None:
    srv = SocleServer(home=tmp_path / "h", env=socle_env)
    result = srv.cli("server", "--listen", "0.0.0.0:0", check=False, timeout=30)
    assert result.returncode == 1
    assert "without TLS" in result.stderr and "SOCLE_TLS_CERT" in result.stderr
    half = srv.cli("server", "--tls-cert", str(tmp_path / "missing.pem"), check=False, timeout=30)
    assert half.returncode == 1 and "SOCLE_TLS_KEY" in half.stderr


def test_api_over_tls_is_verified(socle_env: dict[str, str], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    env = dict(socle_env, SOCLE_TLS_CERT=str(cert), SOCLE_TLS_KEY=str(key), SOCLE_CA=str(cert))
    srv = SocleServer(home=tmp_path / "home", env=env, verify=str(cert))
    srv.start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        assert json.loads(srv.cli("status", "--json").stdout)["apps"] == []
        untrusted = dict(env)
        del untrusted["SOCLE_CA"]
        result = subprocess.run(
            [SOCLE, "status"], env=untrusted, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 1 and "certificate" in result.stderr.lower()
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/healthz", timeout=5)
    finally:
        srv.cleanup()
