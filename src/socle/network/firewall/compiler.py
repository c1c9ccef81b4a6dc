"""NetworkPolicy objects plus the running instances -> ONE nftables ruleset (pure).

:func:`compile_ruleset` is a pure function of (policies, members, config): it never runs
``nft`` and is tested from data. The result replaces Socle's own table, ``inet socle``, in
one ``nft -f`` transaction (``table`` / ``delete table`` / full definition), so a load either
installs the whole new ruleset or, on any error, leaves the previous one in place; other
tables (the distribution's, Docker's, another tool's) are never flushed or touched.

Layout of the table (instances on the bridge ``config.bridge``, see docs/network.md):

``input`` (hook input)
    loopback and established traffic accepted; the host policies' allow rules; then, when
    instances are isolated, everything else from the bridge dropped (an app cannot reach
    the machine's services unless a host policy allows it); then the ports host policies
    guard dropped for every other source.
``forward`` (hook forward)
    nothing routed between the bridge and any other interface (no egress off the machine,
    no ingress from outside); traffic between instances jumps to ``to_instances``.
``to_instances``
    established traffic accepted; each policy's chain for the instances it selects (only
    ``accept`` rules, so several policies selecting one app allow the union); then the
    known instances no policy selects accepted; everything else dropped (default deny, and
    fail-closed: an instance not compiled in yet is not reachable from its peers).

No manifest text is ever written into the script except validated names inside comments
(``NAME_RE``: lowercase letters, digits, ``-``); label values are only compared here, in
Python; addresses, CIDRs and port numbers are re-rendered from parsed ``ipaddress`` and
``int`` values. So a hostile label or name cannot inject nft syntax.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from socle.model.networkpolicy import IngressRule, NetworkPolicySpec, Peer, describe, rule_text

TABLE = "socle"
FAMILY = "inet"
DEFAULT_BRIDGE = "socle0"


def table_for(bridge: str) -> str:
    """The table of the control plane on ``bridge``: ``socle`` on the default bridge,
    ``socle_<bridge>`` on another, so control planes on separate bridges never replace
    each other's rules (one control plane per bridge, see the runtime's bridge lock)."""
    return TABLE if bridge == DEFAULT_BRIDGE else f"{TABLE}_{bridge}"


@dataclass(frozen=True)
class Member:
    """One running instance on the bridge, as the firewall sees it."""

    app: str
    environment: str
    labels: Mapping[str, str]
    address: str
    ports: Mapping[str, int]


@dataclass(frozen=True)
class FirewallConfig:
    bridge: str = DEFAULT_BRIDGE
    """The Socle bridge every instance's veth is plugged into."""
    isolate: bool = True
    """Instances live in their own network namespaces on ``bridge``: emit the forward and
    instance rules (without it only host policies mean anything)."""
    host_services: tuple[tuple[str, str, int], ...] = ()
    """``(protocol, address, port)`` on the host every instance may reach (the DNS server
    on the gateway)."""


@dataclass(frozen=True)
class RuleInfo:
    """One rule of the ruleset as users read it (``comment`` ties it to nft's counters)."""

    comment: str
    policy: str
    text: str


@dataclass
class Ruleset:
    script: str
    """The ``nft -f`` input: replaces table ``inet socle`` atomically."""
    rules: list[RuleInfo] = field(default_factory=list)
    table: str = TABLE

    @property
    def body(self) -> str:
        """The table definition alone (what changed is diffed on this)."""
        start = self.script.index(f"table {FAMILY} {self.table} {{")
        return self.script[start:]


# -- selection ------------------------------------------------------------------------------


def _labels_match(want: Mapping[str, str] | None, have: Mapping[str, str]) -> bool:
    return want is None or all(have.get(k) == v for k, v in want.items())


def selects(spec: NetworkPolicySpec, member: Member) -> bool:
    """Whether the (non-host) policy ``spec`` protects ``member``."""
    if spec.host:
        return False
    if spec.app is not None and spec.app != member.app:
        return False
    if spec.environment is not None and spec.environment != member.environment:
        return False
    return _labels_match(spec.labels, member.labels)


def peer_matches(peer: Peer, member: Member) -> bool:
    if peer.cidr is not None:
        return False  # CIDRs are matched by nft, not by membership
    if peer.app is not None and peer.app != member.app:
        return False
    if peer.environment is not None and peer.environment != member.environment:
        return False
    return _labels_match(peer.labels, member.labels)


# -- rendering ------------------------------------------------------------------------------


class _Script:
    def __init__(self, table: str) -> None:
        self.table = table
        self.sets: list[str] = []
        self.chains: dict[str, list[str]] = {}
        self.rules: list[RuleInfo] = []
        self._count = 0

    def set(self, type_: str, elements: Iterable[str], *, interval: bool = False) -> str:
        self._count += 1
        name = f"s{self._count}"
        unique = sorted(set(elements))
        flags = "\t\tflags interval\n\t\tauto-merge\n" if interval else ""
        body = f"\t\telements = {{ {', '.join(unique)} }}\n" if unique else ""
        self.sets.append(f"\tset {name} {{\n\t\ttype {type_}\n{flags}{body}\t}}\n")
        return name

    def chain(self, name: str, header: str | None = None) -> list[str]:
        lines = self.chains.setdefault(name, [])
        if header is not None:
            lines.append(header)
        return lines

    def rule(self, chain: str, text: str, comment: str, policy: str, readable: str) -> None:
        self.chains[chain].append(f"{text} comment {_quote(comment)}")
        self.rules.append(RuleInfo(comment, policy, readable))

    def render(self) -> str:
        t = self.table
        out = [f"table {FAMILY} {t}\n", f"delete table {FAMILY} {t}\n", f"table {FAMILY} {t} {{\n"]
        out += self.sets
        for name, lines in self.chains.items():
            out.append(f"\tchain {name} {{\n")
            out += [f"\t\t{line}\n" for line in lines]
            out.append("\t}\n")
        out.append("}\n")
        return "".join(out)


def _quote(comment: str) -> str:
    # Comments hold only names validated by NAME_RE plus our own words; anything else is
    # dropped rather than escaped, so a comment can never close its quotes.
    safe = "".join(c for c in comment if c.isascii() and (c.isalnum() or c in " #:._-/"))
    return '"' + safe[:120] + '"'


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _v4(member: Member) -> str | None:
    """The member's IPv4 address re-rendered from its parsed form (instances on the bridge
    are IPv4), None otherwise."""
    ip = _ip(member.address)
    return str(ip) if ip is not None and ip.version == 4 else None


class _Members:
    """The members, indexed by app: a selector naming an app looks at that app's instances
    only, so compiling grows with policies + instances, not their product."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.all = list(members)
        self.by_app: dict[str, list[Member]] = {}
        for member in self.all:
            self.by_app.setdefault(member.app, []).append(member)

    def candidates(self, app: str | None) -> list[Member]:
        return self.all if app is None else self.by_app.get(app, [])


def _sources(rule: IngressRule, members: _Members) -> tuple[list[str], list[str]] | None:
    """``(ipv4, ipv6)`` source elements of ``rule``, None when it allows any source."""
    if rule.from_ is None:
        return None
    v4: list[str] = []
    v6: list[str] = []
    for peer in rule.from_:
        if peer.cidr is not None:
            network = ipaddress.ip_network(peer.cidr)
            (v4 if network.version == 4 else v6).append(str(network))
            continue
        for member in members.candidates(peer.app):
            if peer_matches(peer, member):
                ip = _ip(member.address)
                if ip is not None:
                    (v4 if ip.version == 4 else v6).append(str(ip))
    return v4, v6


def compile_ruleset(
    policies: Mapping[str, NetworkPolicySpec],
    members: Sequence[Member],
    config: FirewallConfig,
) -> Ruleset:
    """The whole ``inet socle`` table for these policies (by name) and instances."""
    indexed = _Members(members)
    table = table_for(config.bridge)
    script = _Script(table)
    bridge = _quote(config.bridge)
    names = sorted(policies)
    script.chain("input", "type filter hook input priority filter; policy accept;")
    script.chain("input").append('iif "lo" accept')
    script.chain("input").append("ct state established,related accept")

    # Host policies: allow rules, then the guarded ports dropped.
    guarded: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    for name in names:
        spec = policies[name]
        if not spec.host:
            continue
        for index, rule in enumerate(spec.ingress):
            ports = sorted(p for p in rule.ports or [] if isinstance(p, int))
            guarded[rule.protocol].update(ports)
            match_ports = f"{rule.protocol} dport {{ {', '.join(map(str, ports))} }}"
            readable = rule_text(spec, rule)
            comment = f"{name}#{index}"
            sources = _sources(rule, indexed)
            if sources is None:
                script.rule("input", f"{match_ports} counter accept", comment, name, readable)
                continue
            v4, v6 = sources
            s4 = script.set("ipv4_addr", v4, interval=True)
            script.rule(
                "input", f"ip saddr @{s4} {match_ports} counter accept", comment, name, readable
            )
            if v6:
                s6 = script.set("ipv6_addr", v6, interval=True)
                script.rule(
                    "input",
                    f"ip6 saddr @{s6} {match_ports} counter accept",
                    comment + "/6",
                    name,
                    readable + " (IPv6)",
                )
    if config.isolate:
        for proto, address, port in config.host_services:
            ip = _ip(address)
            if ip is None or ip.version != 4 or proto not in ("tcp", "udp"):
                continue
            script.rule(
                "input",
                f"iifname {bridge} ip daddr {ip} {proto} dport {int(port)} counter accept",
                f"socle:host-service-{proto}-{int(port)}",
                "",
                f"allow instances to {proto} {ip}:{int(port)} (Socle's DNS)",
            )
        script.rule(
            "input",
            f"iifname {bridge} counter drop",
            "socle:instances-to-host",
            "",
            "deny instances to this machine (unless a host policy allows)",
        )
    for proto in ("tcp", "udp"):
        if guarded[proto]:
            listed = ", ".join(map(str, sorted(guarded[proto])))
            script.rule(
                "input",
                f"{proto} dport {{ {listed} }} counter drop",
                f"socle:host-guarded-{proto}",
                "",
                f"deny other sources to {proto} ports {listed} of this machine",
            )

    if config.isolate:
        _instance_rules(script, policies, names, indexed, bridge)
    return Ruleset(script.render(), script.rules, table)


def _instance_rules(
    script: _Script,
    policies: Mapping[str, NetworkPolicySpec],
    names: list[str],
    members: _Members,
    bridge: str,
) -> None:
    script.chain("forward", "type filter hook forward priority filter; policy accept;")
    script.rule(
        "forward",
        f"iifname {bridge} oifname != {bridge} counter drop",
        "socle:no-egress",
        "",
        "deny traffic from instances routed off the bridge (nothing leaves the machine)",
    )
    script.rule(
        "forward",
        f"oifname {bridge} iifname != {bridge} counter drop",
        "socle:no-ingress-from-outside",
        "",
        "deny traffic routed from other interfaces to instances",
    )
    script.chain("forward").append(f"oifname {bridge} jump to_instances")
    script.chain("to_instances", "ct state established,related accept")
    isolated: set[str] = set()
    for number, name in enumerate(names):
        spec = policies[name]
        if spec.host:
            continue
        selected = [
            (m, a)
            for m in members.candidates(spec.app)
            if selects(spec, m) and (a := _v4(m)) is not None
        ]
        addresses = [a for _, a in selected]
        isolated.update(addresses)
        chain = f"p{number}"
        script.chain(chain)
        sel = script.set("ipv4_addr", addresses)
        script.chain("to_instances").append(f"ip daddr @{sel} jump {chain}")
        for index, rule in enumerate(spec.ingress):
            readable = rule_text(spec, rule)
            comment = f"{name}#{index}"
            sources = _sources(rule, members)
            match_src = ""
            if sources is not None:
                src = script.set("ipv4_addr", sources[0], interval=True)
                match_src = f"ip saddr @{src} "
            if rule.ports is None:
                script.rule(chain, f"{match_src}counter accept", comment, name, readable)
                continue
            wanted = [p for p in rule.ports if isinstance(p, str)]
            pairs = [
                f"{address} . {int(m.ports[port])}"
                for m, address in selected
                for port in wanted
                if port in m.ports
            ]
            dst = script.set("ipv4_addr . inet_service", pairs)
            script.rule(
                chain,
                f"{match_src}ip daddr . {rule.protocol} dport @{dst} counter accept",
                comment,
                name,
                readable,
            )
    # Fail closed: only instances the compiler knows and no policy selects are open. A new
    # instance is unreachable from its peers until the next load has placed it (the host
    # still reaches it: ingress and health checks do not cross the forward hook).
    unselected = {a for m in members.all if (a := _v4(m)) is not None} - isolated
    open_ = script.set("ipv4_addr", sorted(unselected))
    script.rule(
        "to_instances",
        f"ip daddr @{open_} accept",
        "socle:unselected",
        "",
        "allow ingress to instances no policy selects",
    )
    script.rule(
        "to_instances",
        "counter drop",
        "socle:default-deny",
        "",
        "deny other ingress to instances (selected by a policy, or not placed yet)",
    )


__all__ = [
    "FAMILY",
    "TABLE",
    "FirewallConfig",
    "Member",
    "RuleInfo",
    "Ruleset",
    "compile_ruleset",
    "describe",
    "peer_matches",
    "rule_text",
    "selects",
    "table_for",
]
