"""The firewall compiler: policies + instances -> one ``inet socle`` table (pure, from data)."""

from __future__ import annotations

import re
from typing import Any

from socle.model.networkpolicy import NetworkPolicySpec
from socle.network.firewall.compiler import FirewallConfig, Member, compile_ruleset, table_for


def spec(data: dict[str, Any]) -> NetworkPolicySpec:
    return NetworkPolicySpec.model_validate(data)


API = Member("api", "default", {"tier": "back"}, "10.213.0.2", {"http": 8080, "admin": 9000})
WEB = Member("web", "default", {"tier": "front"}, "10.213.0.3", {"http": 8081})
OTHER = Member("other", "default", {}, "10.213.0.4", {"http": 8082})


def sets(script: str) -> dict[str, str]:
    """Set name -> its elements text."""
    out = {}
    for name, body in re.findall(r"set (s\d+) \{(.*?)\n\t\}", script, re.S):
        found = re.search(r"elements = \{ (.*) \}", body)
        out[name] = found.group(1) if found else ""
    return out


def rule_line(script: str, comment: str) -> str:
    (line,) = [ln.strip() for ln in script.splitlines() if f'comment "{comment}"' in ln]
    return line


def test_the_script_replaces_only_socles_table_in_one_transaction() -> None:
    script = compile_ruleset({}, [], FirewallConfig()).script
    assert script.startswith("table inet socle\ndelete table inet socle\ntable inet socle {\n")
    assert "flush ruleset" not in script
    assert re.findall(r"^(?:delete )?table (\S+ \S+)", script, re.M) == ["inet socle"] * 3


def test_a_policy_allows_named_ports_from_an_app_and_isolates_the_selected_app() -> None:
    policies = {
        "api-in": spec({"app": "api", "ingress": [{"from": [{"app": "web"}], "ports": ["http"]}]})
    }
    ruleset = compile_ruleset(policies, [API, WEB, OTHER], FirewallConfig())
    script = ruleset.script
    found = sets(script)
    allow = rule_line(script, "api-in#0")
    src, dst = re.findall(r"@(s\d+)", allow)
    assert found[src] == "10.213.0.3"
    assert found[dst] == "10.213.0.2 . 8080"  # the instance's own port number for "http"
    assert rule_line(script, "socle:default-deny").startswith("counter drop")
    opened = rule_line(script, "socle:unselected")
    assert found[re.findall(r"@(s\d+)", opened)[0]] == "10.213.0.3, 10.213.0.4"  # not api
    texts = {r.comment: r.text for r in ruleset.rules}
    assert texts["api-in#0"] == "allow tcp ports http to app api from app web"


def test_labels_and_environments_select_members_and_cidrs_go_in_as_intervals() -> None:
    prod_web = Member("web", "prod", {"tier": "front"}, "10.213.0.9", {"http": 1})
    policies = {
        "p": spec(
            {
                "labels": {"tier": "back"},
                "ingress": [
                    {
                        "from": [
                            {"labels": {"tier": "front"}, "environment": "prod"},
                            {"cidr": "10.9.0.0/16"},
                        ]
                    }
                ],
            }
        )
    }
    script = compile_ruleset(policies, [API, WEB, prod_web], FirewallConfig()).script
    found = sets(script)
    allow = rule_line(script, "p#0")
    (src,) = re.findall(r"@(s\d+)", allow)
    assert found[src] == "10.213.0.9, 10.9.0.0/16"
    assert "ip daddr" not in allow  # no ports: every port of the selected app


def test_several_policies_selecting_one_app_allow_the_union() -> None:
    policies = {
        "a": spec({"app": "api", "ingress": [{"from": [{"app": "web"}], "ports": ["http"]}]}),
        "b": spec({"app": "api", "ingress": [{"from": [{"app": "other"}], "ports": ["admin"]}]}),
    }
    script = compile_ruleset(policies, [API, WEB, OTHER], FirewallConfig()).script
    chains = re.findall(r"chain (p\d+) \{(.*?)\n\t\}", script, re.S)
    assert len(chains) == 2
    for _, body in chains:
        assert "drop" not in body  # only accepts: the one drop comes after every jump
    to_instances = re.search(r"chain to_instances \{(.*?)\n\t\}", script, re.S)
    assert to_instances is not None
    lines = [ln.strip() for ln in to_instances.group(1).splitlines() if ln.strip()]
    assert lines[0] == "ct state established,related accept"
    assert lines[-2].startswith("ip daddr @") and "accept" in lines[-2]
    assert lines[-1].startswith("counter drop")


def test_nothing_leaves_the_bridge_and_instances_cannot_reach_the_host() -> None:
    script = compile_ruleset({}, [API], FirewallConfig(bridge="socle7")).script
    assert 'iifname "socle7" oifname != "socle7" counter drop' in script
    assert 'iifname "socle7" counter drop comment "socle:instances-to-host"' in script
    assert 'iif "lo" accept' in script


def test_without_isolation_only_host_rules_are_emitted() -> None:
    policies = {
        "api-in": spec({"app": "api", "ingress": []}),
        "admin": spec(
            {
                "host": True,
                "ingress": [
                    {
                        "from": [{"cidr": "192.168.0.0/16"}, {"cidr": "fd00::/8"}],
                        "ports": [22, 7780],
                    }
                ],
            }
        ),
    }
    script = compile_ruleset(policies, [API], FirewallConfig(isolate=False)).script
    assert "forward" not in script and "to_instances" not in script
    assert "tcp dport { 22, 7780 } counter accept" in rule_line(script, "admin#0")
    assert rule_line(script, "admin#0/6").startswith("ip6 saddr @")
    assert rule_line(script, "socle:host-guarded-tcp").startswith(
        "tcp dport { 22, 7780 } counter drop"
    )
    assert "socle0" not in script


def test_hostile_labels_and_addresses_never_reach_the_script() -> None:
    evil = '"; flush ruleset; table ip x { chain y { } } #'
    members = [
        Member("web", "default", {"tier": evil}, "10.213.0.3", {"http": 1}),
        Member("api", "default", {}, "10.213.0.2; flush ruleset", {"http": 2}),
    ]
    policies = {"p": spec({"app": "api", "ingress": [{"from": [{"labels": {"tier": evil}}]}]})}
    script = compile_ruleset(policies, members, FirewallConfig(bridge='so"cle')).script
    assert "flush" not in script and "table ip" not in script
    assert sets(script)[re.findall(r"@(s\d+)", rule_line(script, "p#0"))[0]] == "10.213.0.3"
    assert 'iifname "socle"' in script  # a quote in a bridge name is dropped, not echoed


def test_the_same_input_compiles_to_the_same_text() -> None:
    policies = {
        "a": spec({"app": "api", "ingress": [{"from": [{"app": "web"}], "ports": ["http"]}]})
    }
    one = compile_ruleset(policies, [API, WEB], FirewallConfig()).body
    two = compile_ruleset(policies, [WEB, API], FirewallConfig()).body
    assert one == two


def test_another_bridge_gets_its_own_table() -> None:
    """Two control planes on two bridges never replace each other's table."""
    assert table_for("socle0") == "socle"
    assert table_for("socle1") == "socle_socle1"
    ruleset = compile_ruleset({}, [], FirewallConfig(bridge="socle1"))
    assert ruleset.script.startswith(
        "table inet socle_socle1\ndelete table inet socle_socle1\ntable inet socle_socle1 {\n"
    )
    assert "table inet socle\n" not in ruleset.script and 'iifname "socle1"' in ruleset.script
    assert ruleset.body.startswith("table inet socle_socle1 {")
