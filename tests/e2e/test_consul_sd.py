"""A real Prometheus-compatible scraper discovers a running app through Socle's Consul API.

Debian's ``prometheus`` 2.42 is built without ``consul_sd_configs`` (the field is refused
at config load), so the scraper here is VictoriaMetrics (Debian ``victoria-metrics``), whose
``-promscrape.config`` reads the same Prometheus ``consul_sd_configs`` and speaks Consul's
catalog/health API with blocking queries. The test checks that both instances of an app
become scrape targets with Consul's meta labels, and that a stopped app's targets go away.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo

SCRAPER = shutil.which("victoria-metrics")

pytestmark = pytest.mark.skipif(
    SCRAPER is None, reason="victoria-metrics is not installed (scripts/install.sh --test)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_consul_sd_finds_the_app_instances(server: SocleServer, tmp_path: Path) -> None:
    assert SCRAPER is not None
    consul_addr = json.loads((server.home / "server.json").read_text())["consul"]
    repo = write_repo(tmp_path / "repo", {"web": {"replicas": 2}})
    server.cli("apply", str(repo), "--yes")
    ports = {i["ports"]["http"] for i in server.app("web")["instances"]}

    config = tmp_path / "scrape.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: socle-apps\n"
        "    consul_sd_configs:\n"
        f"      - server: '{consul_addr}'\n"
        f"        token: '{server.token}'\n"
        "    relabel_configs:\n"
        "      - source_labels: [__meta_consul_service_metadata_environment]\n"
        "        target_label: environment\n"
    )
    config.chmod(0o600)
    port = free_port()
    log = (tmp_path / "scraper.log").open("wb")
    proc = subprocess.Popen(
        [
            SCRAPER,
            f"-promscrape.config={config}",
            f"-storageDataPath={tmp_path / 'tsdb'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-promscrape.consulSDCheckInterval=1s",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def targets() -> list[dict[str, Any]]:
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5)
            active: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
            return [t for t in active if t["labels"].get("job") == "socle-apps"]

        def found_ports() -> set[int]:
            return {int(t["labels"]["instance"].rsplit(":", 1)[1]) for t in targets()}

        wait_for(lambda: found_ports() == ports, 120, "the scraper to discover both instances")
        for target in targets():
            meta = target["discoveredLabels"]
            assert meta["__meta_consul_service"] == "web"
            assert meta["__meta_consul_dc"] == "dc1"
            assert target["labels"]["environment"] == "default"
            assert ",env=default," in meta["__meta_consul_tags"]

        # The app is deleted: its targets leave the scraper too.
        (repo / "apps.yaml").write_text("")
        server.cli("apply", str(repo), "--yes", "--allow-delete-all")
        wait_for(lambda: targets() == [], 120, "the targets to go away")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
