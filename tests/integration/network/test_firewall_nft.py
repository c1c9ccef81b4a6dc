"""The firewall with real nftables and real packets between network namespaces.

The test builds its own "host" namespace holding the Socle bridge, plus one namespace per
instance plugged into it (the runtime's own plumbing, :class:`BridgeNetwork`), and loads the
compiled ruleset inside the host namespace: the machine's own firewall is never touched.
Allowed ports connect, denied ports time out, an instance cannot reach the host's services,
a failed ``nft -f`` keeps the previous ruleset, and hostile labels inject nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from socle.errors import FirewallError
from socle.model.networkpolicy import NetworkPolicySpec
from socle.model.status import InstanceState
from socle.network.firewall.compiler import FirewallConfig, Member, compile_ruleset
from socle.network.firewall.nft import Nft, counters
from socle.network.firewall.service import Enforcement, Firewall
from socle.runtime.driver import InstanceStatus
from socle.runtime.local.netns import BridgeNetwork

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="needs root, nft and ip (network namespaces)",
)

SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.sendall(b"hi"); c.close()
for p in sys.argv[2:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("ok" if s.recv(2) == b"hi" else "bad")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e.errno)
"""

DENIED_TIMEOUT = 2.0
"""A dropped SYN is only ever seen as a timeout; allowed connects get a generous one."""


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


@dataclass
class Lab:
    host: str
    net: BridgeNetwork
    nft: Nft
    addresses: dict[str, str] = field(default_factory=dict)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, instance: str) -> str:
        return self.net.netns(instance)

    def serve(self, netns: str, bind: str, *ports: int) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", SERVER, bind, *map(str, ports)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def connect(self, netns: str, address: str, port: int, *, denied: bool = False) -> str:
        timeout = DENIED_TIMEOUT if denied else 20.0
        out = run(
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-c",
            CONNECT,
            address,
            str(port),
            str(timeout),
        )
        return out.strip()

    def table(self) -> str:
        return run("ip", "netns", "exec", self.host, "nft", "list", "table", "inet", "socle")


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = f"sft{os.getpid() % 100000}"
    host = f"{tag}-host"
    run("ip", "netns", "add", host)
    net = BridgeNetwork(
        bridge="socle0",
        network=ipaddress.IPv4Network("10.213.0.0/24"),
        host_netns=host,
        prefix=f"{tag}-",
    )
    lab = Lab(host, net, Nft(netns=host))
    try:
        run("ip", "-n", host, "link", "set", "lo", "up")
        net.ensure_bridge()
        for index, name in enumerate(["a", "b", "c"]):
            address = net.network.network_address + 2 + index
            net.create(name, address)
            lab.addresses[name] = str(address)
        yield lab
    finally:
        for proc in lab.servers:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for name in ["a", "b", "c"]:
            net.delete(name)
        subprocess.run(["ip", "netns", "del", host], check=False)


HTTP, ADMIN, HOST_API = 8001, 8002, 7780


def members(lab: Lab, labels_a: dict[str, str] | None = None) -> list[Member]:
    ports = {"http": HTTP, "admin": ADMIN}
    return [
        Member("a", "default", labels_a or {"tier": "front"}, lab.addresses["a"], ports),
        Member("b", "default", {"tier": "back"}, lab.addresses["b"], ports),
        Member("c", "default", {}, lab.addresses["c"], ports),
    ]


def policies(data: dict[str, dict[str, object]]) -> dict[str, NetworkPolicySpec]:
    return {name: NetworkPolicySpec.model_validate(spec) for name, spec in data.items()}


B_FROM_A_HTTP = {"b-in": {"app": "b", "ingress": [{"from": [{"app": "a"}], "ports": ["http"]}]}}


def test_allowed_ports_connect_and_denied_ones_time_out(lab: Lab) -> None:
    b = lab.addresses["b"]
    lab.serve(lab.ns("b"), "127.0.0.1", HTTP, ADMIN)  # apps listening on loopback, as usual
    lab.serve(lab.ns("c"), "127.0.0.1", HTTP)
    # Before any policy: everything on the bridge is reachable (through the loopback NAT).
    assert lab.connect(lab.ns("a"), b, ADMIN) == "ok"
    ruleset = compile_ruleset(policies(B_FROM_A_HTTP), members(lab), FirewallConfig())
    lab.nft.load_sync(ruleset.script)

    assert lab.connect(lab.ns("a"), b, HTTP) == "ok"
    assert lab.connect(lab.ns("a"), b, ADMIN, denied=True) == "timeout"
    assert lab.connect(lab.ns("c"), b, HTTP, denied=True) == "timeout"
    # c is selected by no policy: open to every peer.
    assert lab.connect(lab.ns("b"), lab.addresses["c"], HTTP) == "ok"
    # The host (ingress, health checks) always reaches instances.
    assert lab.connect(lab.host, b, ADMIN) == "ok"

    found = counters(lab.nft.table_sync())
    assert found["b-in#0"].packets >= 1
    assert found["socle:default-deny"].packets >= 2


def test_an_instance_cannot_reach_the_hosts_services(lab: Lab) -> None:
    lab.serve(lab.host, "127.0.0.1", HOST_API)  # the control-plane API, on loopback
    lab.serve(lab.host, "0.0.0.0", HOST_API + 1)  # something listening on every address
    ruleset = compile_ruleset({}, members(lab), FirewallConfig())
    lab.nft.load_sync(ruleset.script)
    gateway = str(lab.net.gateway)
    assert lab.connect(lab.host, "127.0.0.1", HOST_API) == "ok"
    # 127.0.0.1 inside the instance is its own: the API is not there.
    assert lab.connect(lab.ns("a"), "127.0.0.1", HOST_API, denied=True) == "refused"
    # The host's addresses are dropped from the bridge (no host policy allows it).
    assert lab.connect(lab.ns("a"), gateway, HOST_API + 1, denied=True) == "timeout"
    assert counters(lab.nft.table_sync())["socle:instances-to-host"].packets >= 1

    # A host policy may open one port to one app.
    allow = {
        "admin": {"host": True, "ingress": [{"from": [{"app": "a"}], "ports": [HOST_API + 1]}]}
    }
    lab.nft.load_sync(compile_ruleset(policies(allow), members(lab), FirewallConfig()).script)
    assert lab.connect(lab.ns("a"), gateway, HOST_API + 1) == "ok"
    assert lab.connect(lab.ns("b"), gateway, HOST_API + 1, denied=True) == "timeout"


def test_a_failed_load_keeps_the_previous_ruleset(lab: Lab) -> None:
    b = lab.addresses["b"]
    lab.serve(lab.ns("b"), "127.0.0.1", HTTP, ADMIN)
    good = compile_ruleset(policies(B_FROM_A_HTTP), members(lab), FirewallConfig())
    lab.nft.load_sync(good.script)
    before = lab.table()
    # Valid syntax, refused by the kernel at commit (a jump to a chain that does not exist):
    # the whole transaction is rolled back, including the `delete table`.
    broken = good.script.replace("jump to_instances", "jump no_such_chain")
    with pytest.raises(FirewallError, match="previous ruleset is still loaded"):
        lab.nft.load_sync(broken)
    assert lab.table() == before
    assert lab.connect(lab.ns("a"), b, HTTP) == "ok"
    assert lab.connect(lab.ns("a"), b, ADMIN, denied=True) == "timeout"


def test_hostile_labels_inject_nothing_and_other_tables_are_untouched(lab: Lab) -> None:
    run(
        "ip",
        "netns",
        "exec",
        lab.host,
        "nft",
        "add",
        "table",
        "inet",
        "other",
    )
    run("ip", "netns", "exec", lab.host, "nft", "add", "chain", "inet", "other", "keep")
    evil = '"; flush ruleset; add table ip pwned #'
    spec = {
        "b-in": {"app": "b", "ingress": [{"from": [{"labels": {"tier": evil}}], "ports": ["http"]}]}
    }
    ruleset = compile_ruleset(policies(spec), members(lab, {"tier": evil}), FirewallConfig())
    lab.nft.load_sync(ruleset.script)
    lab.nft.load_sync(ruleset.script)  # loading twice replaces, never duplicates
    tables = run("ip", "netns", "exec", lab.host, "nft", "list", "tables")
    assert tables.split() == ["table", "inet", "other", "table", "inet", "socle"]
    assert lab.table().count('comment "b-in#0"') == 1
    lab.serve(lab.ns("b"), "127.0.0.1", HTTP)
    assert lab.connect(lab.ns("a"), lab.addresses["b"], HTTP) == "ok"  # a has the evil label
    assert lab.connect(lab.ns("c"), lab.addresses["b"], HTTP, denied=True) == "timeout"


class Instances:
    """A small in-memory runtime (the InstanceSource seam): statuses pushed to listeners."""

    def __init__(self, statuses: list[InstanceStatus]) -> None:
        self.statuses = statuses
        self.listeners: list[Callable[[InstanceStatus], None]] = []

    def instances(self) -> list[InstanceStatus]:
        return list(self.statuses)

    def subscribe(self, listener: Callable[[InstanceStatus], None]) -> None:
        self.listeners.append(listener)

    def push(self, status: InstanceStatus) -> None:
        self.statuses.append(status)
        for listener in self.listeners:
            listener(status)


def status(app: str, address: str) -> InstanceStatus:
    return InstanceStatus(
        id=f"{app}-0", app=app, release="r1", ordinal=0, state=InstanceState.RUNNING,
        ready=True, pid=1, address=address, ports={"http": HTTP, "admin": ADMIN}, restarts=0,
        started_at=None, ready_since=None, last_exit_code=None, isolation="none",
    )  # fmt: skip


def test_the_firewall_follows_policies_and_instances(lab: Lab) -> None:
    lab.serve(lab.ns("b"), "127.0.0.1", HTTP)
    runtime = Instances([status("b", lab.addresses["b"])])
    firewall = Firewall(
        runtime, FirewallConfig(), Enforcement(True, "", isolated=True), nft=lab.nft,
        resync_seconds=0.2,
    )  # fmt: skip

    async def scenario() -> None:
        await firewall.start()
        try:
            assert firewall.loads == 0  # held until the engine handed the stored policies
            await firewall.release()
            # No policy yet, but instances are on the bridge: the base rules load.
            assert firewall.loads == 1 and "socle:no-egress" in lab.table()
            firewall.set("b-in", B_FROM_A_HTTP["b-in"])
            await until(lambda: firewall.loads == 2)
            # a is not running yet: nothing may reach b.
            assert lab.connect(lab.ns("a"), lab.addresses["b"], HTTP, denied=True) == "timeout"
            runtime.push(status("a", lab.addresses["a"]))
            await until(lambda: firewall.loads == 3)
            assert lab.connect(lab.ns("a"), lab.addresses["b"], HTTP) == "ok"
            shown = await firewall.status()
            assert shown["enforced"] and shown["loaded"] and not shown["last_error"]
            rows = {r["rule"]: r for r in shown["rules"]}
            assert rows["b-in#0"]["packets"] >= 1
            assert rows["b-in#0"]["text"] == "allow tcp ports http to app b from app a"
            assert firewall.policy_status("b-in") == (True, "enforced")
        finally:
            await firewall.stop()

    asyncio.run(scenario())
    assert "b-in#0" in lab.table()  # stopping the control plane leaves the rules in place


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_an_instance_not_compiled_in_yet_is_closed_to_its_peers(lab: Lab) -> None:
    lab.serve(lab.ns("c"), "127.0.0.1", HTTP)
    known = [m for m in members(lab) if m.app != "c"]  # c started after the last load
    lab.nft.load_sync(compile_ruleset({}, known, FirewallConfig()).script)
    assert lab.connect(lab.ns("a"), lab.addresses["c"], HTTP, denied=True) == "timeout"
    assert lab.connect(lab.host, lab.addresses["c"], HTTP) == "ok"  # health checks pass
    lab.nft.load_sync(compile_ruleset({}, members(lab), FirewallConfig()).script)
    assert lab.connect(lab.ns("a"), lab.addresses["c"], HTTP) == "ok"


def test_a_new_instance_reusing_an_address_is_reached_at_once(lab: Lab) -> None:
    address = ipaddress.IPv4Address(lab.addresses["c"])
    lab.serve(lab.ns("c"), "127.0.0.1", HTTP)
    assert lab.connect(lab.host, str(address), HTTP) == "ok"  # the host learnt c's MAC
    old_mac = run("ip", "-n", lab.ns("c"), "-br", "link", "show", "eth0").split()[2]
    assert old_mac in run("ip", "-n", lab.host, "neigh", "show", "to", str(address))
    lab.net.delete("c")
    lab.net.create("c2", address)  # a new veth (new MAC) with the same address
    try:
        # The host forgot the old MAC (else its packets go nowhere until the entry expires).
        assert old_mac not in run("ip", "-n", lab.host, "neigh", "show", "to", str(address))
        lab.serve(lab.ns("c2"), "127.0.0.1", HTTP)
        assert lab.connect(lab.host, str(address), HTTP, denied=True) == "ok"
    finally:
        lab.net.delete("c2")


def test_a_table_changed_by_hand_is_loaded_again(lab: Lab) -> None:
    """Drift: someone deletes Socle's table or one of its chains behind its back; the
    firewall notices within its drift period, loads its ruleset again and says so, and an
    unchanged table is never taken for drift."""
    lab.serve(lab.ns("b"), "127.0.0.1", HTTP)
    runtime = Instances([status("b", lab.addresses["b"]), status("c", lab.addresses["c"])])
    firewall = Firewall(
        runtime, FirewallConfig(), Enforcement(True, "", isolated=True), nft=lab.nft,
        resync_seconds=0.1, drift_seconds=0.2,
    )  # fmt: skip
    firewall.set("b-in", B_FROM_A_HTTP["b-in"])

    async def scenario() -> None:
        await firewall.start()
        try:
            await firewall.release()
            assert firewall.loads == 1
            await asyncio.sleep(1.0)  # about five drift checks of an untouched table
            assert firewall.drift_corrections == 0 and firewall.loads == 1
            assert lab.connect(lab.ns("c"), lab.addresses["b"], HTTP, denied=True) == "timeout"

            run("ip", "netns", "exec", lab.host, "nft", "delete", "table", "inet", "socle")
            assert lab.connect(lab.ns("c"), lab.addresses["b"], HTTP) == "ok"  # wide open
            await until(lambda: firewall.drift_corrections == 1, 10)
            assert "b-in#0" in lab.table()
            assert lab.connect(lab.ns("c"), lab.addresses["b"], HTTP, denied=True) == "timeout"
            shown = await firewall.status()
            assert shown["drift_corrections"] == 1 and "deleted" in shown["last_drift"]

            chain = ("nft", "flush", "chain", "inet", "socle", "to_instances")
            run("ip", "netns", "exec", lab.host, *chain)
            await until(lambda: firewall.drift_corrections == 2, 10)
            assert "changed" in firewall.last_drift and "socle:default-deny" in lab.table()
            assert lab.connect(lab.ns("c"), lab.addresses["b"], HTTP, denied=True) == "timeout"
            await asyncio.sleep(1.0)
            assert firewall.drift_corrections == 2, "the reloaded table is the new baseline"
        finally:
            await firewall.stop()

    asyncio.run(scenario())
