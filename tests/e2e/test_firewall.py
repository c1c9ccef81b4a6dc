"""NetworkPolicy as a user meets it: plan shows the rules, apply loads them, real packets
between real instances obey them, and ``socle firewall status`` counts them.

As root every instance runs in its own network namespace on the Socle bridge; the test
sends its packets from inside those namespaces (``ip netns exec``), never off the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.socle_fixture import SocleServer, wait_for, write_repo

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("nsenter") is None,
    reason="needs root, nft and nsenter (per-instance network namespaces)",
)

CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("ok")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e.errno)
"""


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "socle/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def write_policies(repo: Path, *docs: dict[str, Any]) -> None:
    (repo / "policies.yaml").write_text(yaml.safe_dump_all(list(docs), sort_keys=False))


def connect(
    server: SocleServer,
    src: dict[str, Any],
    dst: dict[str, Any],
    port: int | None = None,
    *,
    denied: bool = False,
) -> str:
    """From instance ``src``'s namespace to ``dst``'s http port (or ``port`` on its address)."""
    netns = namespace(server, src)
    target = dst["ports"]["http"] if port is None else port
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", CONNECT, dst["address"], str(target), "2" if denied else "20"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def namespace(server: SocleServer, inst: dict[str, Any]) -> str:
    return "socle-" + hashlib.sha256(str(server.home).encode()).hexdigest()[:6] + "-" + inst["id"]


def instance(server: SocleServer, app: str) -> dict[str, Any]:
    found: dict[str, Any] = server.app(app)["instances"][0]
    return found


def test_policies_are_planned_applied_and_enforced_with_real_packets(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"api": {}, "web": {}, "other": {}})
    api_in = policy(
        "api-in", {"app": "api", "ingress": [{"from": [{"app": "web"}], "ports": ["http"]}]}
    )

    # A policy naming a port the app does not have is refused at plan, with where and why.
    write_policies(repo, policy("api-in", {"app": "api", "ingress": [{"ports": ["htp"]}]}))
    refused = server.cli("plan", str(repo), check=False)
    assert refused.returncode == 1
    assert "policies.yaml:" in refused.stderr and "spec.ingress[0].ports[0]" in refused.stderr
    assert "app api has no port named 'htp'" in refused.stderr

    write_policies(repo, api_in)
    plan = server.cli("plan", str(repo), check=False)
    assert plan.returncode == 2, plan.stderr
    assert "NetworkPolicy/api-in" in plan.stdout
    assert "+ allow tcp ports http to app api from app web" in plan.stdout
    server.cli("apply", str(repo), "--yes", timeout=300)
    for name in ("api", "web", "other"):
        wait_for(lambda n=name: server.app(n)["ready"] == 1, 60, f"{name} ready")

    api, web, other = (instance(server, n) for n in ("api", "web", "other"))
    assert api["address"] != "127.0.0.1" and api["address"].startswith("10.")
    shown = json.loads(server.cli("firewall", "status", "--json").stdout)
    assert shown["enforced"] and shown["isolated"] and shown["loaded"], shown
    wait_for(lambda: connect(server, web, api) == "ok", 30, "web reaches api")
    assert connect(server, other, api, denied=True) == "timeout"
    # web is selected by no policy
    wait_for(lambda: connect(server, api, web) == "ok", 30, "api reaches web")
    # The control plane's API listens on the host's loopback: not reachable from an app.
    port = int(server.url.rsplit(":", 1)[1])
    loopback = {"id": api["id"], "address": "127.0.0.1", "ports": {"http": port}}
    assert connect(server, api, loopback, denied=True) == "refused"

    # Instances ask the DNS server on the gateway (their own loopback is not the host's).
    environ = Path(f"/proc/{web['pid']}/environ").read_bytes().split(b"\0")
    dns = next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"SOCLE_DNS="))
    gateway, dns_port = dns.rsplit(":", 1)
    assert gateway == server.status()["control_plane"]["network"]["instances_dns"].rsplit(":", 1)[0]
    answer = subprocess.run(
        ["ip", "netns", "exec", namespace(server, web), "dig", f"@{gateway}", "-p", dns_port,
         "+short", "+time=5", "api.default.socle.internal", "A"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert answer.stdout.split() == [api["address"]]

    shown = json.loads(server.cli("firewall", "status", "--json").stdout)
    rules = {r["rule"]: r for r in shown["rules"]}
    assert rules["api-in#0"]["packets"] >= 1 and rules["socle:default-deny"]["packets"] >= 1
    table = server.cli("firewall", "status").stdout
    assert "firewall enforced" in table and "allow tcp ports http to app api from app web" in table
    assert "firewall: enforced" in server.cli("status").stdout

    # Someone deletes the table behind Socle's back: it is loaded again within seconds.
    subprocess.run(["nft", "delete", "table", "inet", "socle"], check=True, timeout=30)

    def drift_corrected() -> bool:
        shown = json.loads(server.cli("firewall", "status", "--json").stdout)
        return bool(shown["drift_corrections"] == 1 and shown["loaded"])

    wait_for(drift_corrected, 60, "the deleted table to be loaded again")
    assert connect(server, other, api, denied=True) == "timeout"
    assert "changed outside Socle 1 time(s)" in server.cli("firewall", "status").stdout
    shown = server.cli("status").stdout
    assert "nftables table inet socle;" in shown and "changed outside Socle 1 time(s)" in shown

    # A change is a diff of rules, applied without restarting anything.
    pid = api["pid"]
    api_in["spec"]["ingress"][0]["from"].append({"app": "other"})
    write_policies(repo, api_in)
    plan = server.cli("plan", str(repo), check=False).stdout
    assert "+ allow tcp ports http to app api from app web, app other" in plan
    assert "- allow tcp ports http to app api from app web" in plan
    server.cli("apply", str(repo), "--yes", timeout=300)
    wait_for(lambda: connect(server, other, api, denied=True) == "ok", 30, "other reaches api")
    assert instance(server, "api")["pid"] == pid

    # Deleting the policy opens api again.
    (repo / "policies.yaml").unlink()
    server.cli("apply", str(repo), "--yes", timeout=300)
    wait_for(
        lambda: not json.loads(server.cli("firewall", "status", "--json").stdout)["policies"],
        30,
        "policy removed",
    )
    wait_for(lambda: connect(server, web, api) == "ok", 30, "web still reaches api")
    server.stop()
    leftovers = [
        n
        for n in os.listdir("/run/netns")
        if n.startswith("socle-" + hashlib.sha256(str(server.home).encode()).hexdigest()[:6])
    ]
    assert leftovers == []  # stopped instances took their namespaces with them


def test_namespaces_are_readopted_after_a_restart_and_strays_are_removed(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", {"web": {}, "peer": {}})
    write_policies(repo, policy("web-closed", {"app": "web", "ingress": []}))
    server.cli("apply", str(repo), "--yes", timeout=300)
    wait_for(lambda: server.app("web")["ready"] == 1, 60, "web ready")
    wait_for(lambda: server.app("peer")["ready"] == 1, 60, "peer ready")
    before = instance(server, "web")
    assert connect(server, instance(server, "peer"), before, denied=True) == "timeout"
    prefix = "socle-" + hashlib.sha256(str(server.home).encode()).hexdigest()[:6] + "-"
    assert prefix + before["id"] in os.listdir("/run/netns")
    # A namespace of this home that no instance record names (a control plane killed right
    # after making it) is a stray.
    subprocess.run(["ip", "netns", "add", prefix + "stray-0"], check=True)

    server.kill9()
    server.start()
    wait_for(lambda: server.app("web")["ready"] == 1, 60, "web re-adopted")
    after = instance(server, "web")
    assert (after["pid"], after["address"]) == (before["pid"], before["address"])
    names = os.listdir("/run/netns")
    assert prefix + before["id"] in names and prefix + "stray-0" not in names
    probe = {"id": before["id"], "address": "127.0.0.1", "ports": after["ports"]}
    assert connect(server, after, probe) == "ok"  # the app still answers in its namespace
    assert connect(server, instance(server, "peer"), after, denied=True) == "timeout"
    shown = json.loads(server.cli("firewall", "status", "--json").stdout)
    assert shown["loaded"] and list(shown["policies"]) == ["web-closed"]
