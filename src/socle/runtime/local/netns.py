"""One network namespace per instance, plugged into the Socle bridge.

As root (and unless ``network_isolation`` is off), every instance runs in its own network
namespace ``socle-<instance id>`` with one veth (``eth0`` inside, ``sv<hash>`` on the host)
on the bridge (``socle0``), an address from the private range (``10.213.0.0/16``) and a
default route via the gateway, which the bridge holds. So:

- an instance cannot reach the host's loopback services (its ``127.0.0.1`` is its own), and
  the firewall (table ``inet socle``) can tell instances apart by address;
- bridge ports are *isolated* (no frame goes straight from one instance to another) and the
  bridge answers ARP for its peers (``proxy_arp_pvlan``): traffic between instances is routed
  by the host, through the ``forward`` hook where the policies are;
- forwarding is enabled on the bridge only (``net.ipv4.conf.<bridge>.forwarding``), never
  machine-wide, and the firewall drops anything routed between the bridge and another
  interface: nothing leaves the machine;
- apps written to listen on ``127.0.0.1:$PORT`` keep working: inside the namespace, traffic
  arriving on ``eth0`` is DNATed to ``127.0.0.1`` (``route_localnet`` on ``eth0``), so the
  host (health checks, ingress, DNS answers) and allowed peers reach it at the veth address.

Every command is an argument list (``ip``, ``nft``, ``sysctl`` through ``ip netns exec``);
names are derived from validated instance ids. ``host_netns`` puts the bridge itself in a
named namespace: labs and tests use it so as not to touch the machine's own network.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from socle.errors import RuntimeDriverError
from socle.fs import try_lock
from socle.runtime.local.records import check_id

NETNS_DIR = Path("/run/netns")
PREFIX = "socle-"
INNER = "eth0"
TIMEOUT = 30.0
DEFAULT_RANGE = ipaddress.IPv4Network("10.213.0.0/16")
CLAIMS = Path("/run/socle/addresses")
"""Address claims of every control plane on this machine, per bridge (tmpfs: a reboot,
which also removes every namespace, clears them)."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


LOCAL_NAT = f"""table ip socle
delete table ip socle
table ip socle {{
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiifname "{INNER}" meta l4proto {{ tcp, udp }} dnat to 127.0.0.1
\t}}
}}
"""
"""The instance-side rule that lets apps listening on loopback answer on their address."""


def _held(path: Path) -> dict[str, object] | None:
    """What a bridge holder wrote about itself (None if unreadable)."""
    with contextlib.suppress(ValueError):
        data = json.loads(_read(path) or "null")
        return data if isinstance(data, dict) else None
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def home_prefix(home: Path) -> str:
    """``socle-<6 hex of the home>-``: namespaces of the control plane of ``home``."""
    return f"{PREFIX}{hashlib.sha256(str(home).encode()).hexdigest()[:6]}-"


@dataclass(frozen=True)
class BridgeNetwork:
    bridge: str = "socle0"
    network: ipaddress.IPv4Network = DEFAULT_RANGE
    host_netns: str | None = None
    """Where the bridge lives (None: this machine's own namespace)."""
    prefix: str = PREFIX
    """Namespace names are ``prefix + instance id``; one control plane's prefix (see
    :func:`home_prefix`) so that its stray sweep never takes another's namespaces."""
    owner: str = ""
    """Who holds the bridge (the control plane's home), named when another is refused."""

    def netns(self, instance_id: str) -> str:
        return self.prefix + check_id(instance_id)

    def veth(self, instance_id: str) -> str:
        """The host end: 15 characters at most (IFNAMSIZ), stable for a namespace name."""
        return "sv" + hashlib.sha256(self.netns(instance_id).encode()).hexdigest()[:12]

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.network.network_address + 1

    def _run(
        self, argv: list[str], *, what: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeDriverError(f"cannot {what}: {exc}") from exc
        if done.returncode != 0:
            raise RuntimeDriverError(
                f"cannot {what}: {done.stderr.strip()[:500]}",
                hint="per-instance network namespaces need root and iproute2; "
                "set SOCLE_NETWORK_ISOLATION=0 to run instances on the host's network",
            )
        return done

    def _host_ip(self, *args: str, what: str) -> None:
        ns = ["-n", self.host_netns] if self.host_netns else []
        self._run([_tool("ip"), *ns, *args], what=what)

    def _in(self, netns: str | None, argv: list[str], *, what: str) -> None:
        if netns is None:
            self._run(argv, what=what)
        else:
            self._run([_tool("ip"), "netns", "exec", netns, *argv], what=what)

    def _sysctl(self, netns: str | None, *settings: str) -> None:
        self._in(netns, [_tool("sysctl"), "-q", "-w", *settings], what="set " + settings[0])

    def _exists(self, link: str) -> bool:
        ns = ["-n", self.host_netns] if self.host_netns else []
        done = subprocess.run(
            [_tool("ip"), *ns, "link", "show", "dev", link],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        return done.returncode == 0

    # -- the bridge --------------------------------------------------------------------------

    @property
    def _holds(self) -> Path:
        return self.claims_root.parent / "bridges"

    def hold(self) -> int:
        """Take the bridge for this control plane until it exits; the descriptor to close.

        One control plane per bridge: each loads its own firewall table whose rules cover
        the whole bridge (default deny between instances it does not know), so a second
        one on the same bridge would cut the first one's instances off. It is refused, as
        is a range overlapping another held bridge's (the host could not route both). An
        flock dies with its holder: a killed control plane never leaves the bridge taken.
        """
        self._holds.mkdir(parents=True, exist_ok=True, mode=0o700)
        space = self.host_netns or "host"
        mine = self._holds / f"{space}-{self.bridge}"
        fd = try_lock(mine)
        if fd is None:
            held = _held(mine) or {}
            raise RuntimeDriverError(
                f"bridge {self.bridge} is used by another Socle control plane "
                f"(home {held.get('owner', '?')}, pid {held.get('pid', '?')})",
                hint="give this control plane its own bridge and range, e.g. "
                "SOCLE_NETWORK_BRIDGE=socle1 SOCLE_NETWORK_RANGE=10.214.0.0/16 "
                "(or SOCLE_NETWORK_ISOLATION=0: no per-instance network)",
            )
        try:
            for path in sorted(self._holds.iterdir()):
                if path == mine:
                    continue
                probe = try_lock(path)
                if probe is not None:  # nobody holds that bridge any more
                    os.close(probe)
                    continue
                other = _held(path)
                if other is None or other.get("netns") != space:
                    continue
                with contextlib.suppress(ValueError, TypeError):
                    theirs = ipaddress.IPv4Network(str(other.get("range")))
                    if theirs.overlaps(self.network):
                        raise RuntimeDriverError(
                            f"network range {self.network} overlaps {theirs} of bridge "
                            f"{other.get('bridge')}, used by the Socle control plane of home "
                            f"{other.get('owner', '?')}",
                            hint="give this control plane a range of its own "
                            "(SOCLE_NETWORK_RANGE, a private IPv4 range)",
                        )
            record = {
                "owner": self.owner,
                "pid": os.getpid(),
                "bridge": self.bridge,
                "range": str(self.network),
                "netns": space,
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def ensure_bridge(self) -> None:
        """Create the bridge with the gateway address (idempotent), forwarding on it only."""
        b = self.bridge
        if not self._exists(b):
            self._host_ip("link", "add", b, "type", "bridge", what=f"create bridge {b}")
        gateway = f"{self.gateway}/{self.network.prefixlen}"
        ns = ["-n", self.host_netns] if self.host_netns else []
        shown = self._run([_tool("ip"), *ns, "-o", "addr", "show", "dev", b], what="read " + b)
        if f" {gateway} " not in shown.stdout:
            self._host_ip("addr", "add", gateway, "dev", b, what=f"give {b} {gateway}")
        self._host_ip("link", "set", b, "up", what=f"bring {b} up")
        self._sysctl(
            self.host_netns,
            f"net.ipv4.conf.{b}.forwarding=1",
            f"net.ipv4.conf.{b}.proxy_arp=1",
            f"net.ipv4.conf.{b}.proxy_arp_pvlan=1",
            f"net.ipv4.conf.{b}.send_redirects=0",
        )

    # -- one instance ------------------------------------------------------------------------

    # -- addresses: claimed machine-wide, so two control planes never share one ----------

    claims_root: Path = CLAIMS
    """Where address claims live (tests point it at a temporary folder)."""

    @property
    def claims(self) -> Path:
        return self.claims_root / f"{self.host_netns or 'host'}-{self.bridge}"

    def claim(self, instance_id: str, prefer: str | None = None) -> ipaddress.IPv4Address:
        """An address of the range for this instance: ``prefer`` (its earlier one) if still
        free or already its own, else the lowest free one. A claim is a file created with
        ``O_EXCL`` (atomic across processes) holding the namespace name."""
        self.claims.mkdir(parents=True, exist_ok=True, mode=0o700)
        owner = self.netns(instance_id)
        candidates: list[ipaddress.IPv4Address] = []
        if prefer is not None:
            with contextlib.suppress(ValueError):
                candidates.append(ipaddress.IPv4Address(prefer))
        for address in [*candidates, *self.network.hosts()]:
            if address == self.gateway or address not in self.network:
                continue
            path = self.claims / str(address)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                if _read(path) == owner:
                    return address
                continue
            with os.fdopen(fd, "w") as out:
                out.write(owner)
            return address
        raise RuntimeDriverError(
            f"no free address left in {self.network}",
            hint="set SOCLE_NETWORK_RANGE to a larger private range",
        )

    def release(self, instance_id: str) -> None:
        """Give back every address this instance's namespace holds a claim on."""
        owner = self.netns(instance_id)
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.claims):
                if _read(Path(entry.path)) == owner:
                    Path(entry.path).unlink(missing_ok=True)

    def ensure(self, instance_id: str, address: str | None) -> tuple[str, str]:
        """The instance's namespace, kept when it is there with ``address`` (a restart), else
        made anew; returns ``(namespace, address)``."""
        if address is not None and self.exists(instance_id):
            owner = _read(self.claims / address)
            if owner == self.netns(instance_id):
                return self.netns(instance_id), address
        claimed = self.claim(instance_id, address)
        try:
            return self.create(instance_id, claimed), str(claimed)
        except BaseException:
            self.release(instance_id)
            raise

    def sweep(self, keep: set[str]) -> list[str]:
        """Remove this network's namespaces and claims whose instance is not in ``keep``
        (strays of a control plane killed between creating them and its record)."""
        removed = []
        for instance_id in self.ours():
            if instance_id not in keep:
                self.delete(instance_id)
                removed.append(f"removed the stray network namespace {self.netns(instance_id)}")
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.claims):
                owner = _read(Path(entry.path)) or ""
                if owner.startswith(self.prefix) and owner[len(self.prefix) :] not in keep:
                    Path(entry.path).unlink(missing_ok=True)
        return removed

    # -- one instance ------------------------------------------------------------------------

    def create(self, instance_id: str, address: ipaddress.IPv4Address) -> str:
        """The instance's namespace with its veth and address (replacing a leftover one of
        the same id); returns the namespace name."""
        if address not in self.network or address in (
            self.gateway,
            self.network.network_address,
            self.network.broadcast_address,
        ):
            raise RuntimeDriverError(f"address {address} is not usable in {self.network}")
        ns = self.netns(instance_id)
        veth = self.veth(instance_id)
        self.delete(instance_id)
        self._run([_tool("ip"), "netns", "add", ns], what=f"create network namespace {ns}")
        try:
            self._run([_tool("ip"), "-n", ns, "link", "set", "lo", "up"], what="bring lo up")
            self._host_ip(
                "link",
                "add",
                veth,
                "type",
                "veth",
                "peer",
                "name",
                INNER,
                "netns",
                ns,
                what=f"create veth {veth}",
            )
            self._host_ip("link", "set", veth, "master", self.bridge, what=f"plug {veth}")
            self._host_ip(
                "link",
                "set",
                veth,
                "type",
                "bridge_slave",
                "isolated",
                "on",
                what=f"isolate {veth}",
            )
            self._host_ip("link", "set", veth, "up", what=f"bring {veth} up")
            inner = [_tool("ip"), "-n", ns]
            cidr = f"{address}/{self.network.prefixlen}"
            self._run([*inner, "addr", "add", cidr, "dev", INNER], what="address " + INNER)
            self._run([*inner, "link", "set", INNER, "up"], what="bring eth0 up")
            self._run(
                [*inner, "route", "add", "default", "via", str(self.gateway)],
                what="add the default route",
            )
            self._sysctl(ns, f"net.ipv4.conf.{INNER}.route_localnet=1")
            self.forget_neighbour(address)
            self._load_local_nat(ns)
        except BaseException:
            self.delete(instance_id)
            raise
        return ns

    def forget_neighbour(self, address: ipaddress.IPv4Address) -> None:
        """Drop the host's ARP entry for ``address``: a new instance that reuses the address
        of a stopped one has another MAC, and the old entry would send the host's packets
        (health checks, ingress) nowhere until it expires (tens of seconds)."""
        ns = ["-n", self.host_netns] if self.host_netns else []
        subprocess.run(
            [_tool("ip"), *ns, "neigh", "flush", "to", str(address), "dev", self.bridge],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )

    def _load_local_nat(self, ns: str) -> None:
        # On nft's stdin: no file to leave behind if we are killed meanwhile.
        argv = [_tool("ip"), "netns", "exec", ns, _tool("nft"), "-f", "-"]
        self._run(argv, what=f"load {ns}'s loopback NAT", stdin=LOCAL_NAT)

    def delete(self, instance_id: str, *, release: bool = False) -> None:
        """Remove the namespace and the host end of its veth (absent is fine); with
        ``release``, its address claim too."""
        if release:
            self.release(instance_id)
        ns = self.netns(instance_id)
        veth = self.veth(instance_id)
        if self._exists(veth):
            ns_args = ["-n", self.host_netns] if self.host_netns else []
            subprocess.run(
                [_tool("ip"), *ns_args, "link", "del", veth],
                capture_output=True,
                timeout=TIMEOUT,
                check=False,
            )
        if (NETNS_DIR / ns).exists():
            self._run([_tool("ip"), "netns", "del", ns], what=f"delete network namespace {ns}")

    def exists(self, instance_id: str) -> bool:
        return (NETNS_DIR / self.netns(instance_id)).exists() and self._exists(
            self.veth(instance_id)
        )

    def ours(self) -> list[str]:
        """Instance ids of every namespace with this network's prefix."""
        try:
            names = os.listdir(NETNS_DIR)
        except FileNotFoundError:
            return []
        return sorted(n[len(self.prefix) :] for n in names if n.startswith(self.prefix))


def missing_tools() -> list[str]:
    """The programs per-instance namespaces need that this machine lacks."""
    return [t for t in ("ip", "nsenter", "nft", "sysctl") if shutil.which(t) is None]


def enter_argv(netns: str, command: list[str], *, workdir: Path | None = None) -> list[str]:
    """``command`` run inside namespace ``netns`` (nsenter execs it: no extra process)."""
    wd = [f"--wd={workdir}"] if workdir is not None else []
    return [_tool("nsenter"), f"--net={NETNS_DIR / netns}", *wd, "--", *command]


__all__ = [
    "PREFIX",
    "BridgeNetwork",
    "enter_argv",
    "home_prefix",
    "missing_tools",
]
