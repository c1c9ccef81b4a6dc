"""Firewall: time to compile policies + instances into table ``inet socle`` and to load it.

APPS apps x 3 instances, one policy per app (allow ``http`` from the next app and from a
CIDR), plus a host policy. Compiling is pure Python; loading runs ``nft -f`` inside a
throwaway network namespace (root only; skipped otherwise), twice: a first load and a
replacing one (what every change costs), then the drift check's read-back. Prints JSON.

    python bench/firewall_compile.py [APPS=200] [ROUNDS=5]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from socle.model.networkpolicy import NetworkPolicySpec
from socle.network.firewall.compiler import FirewallConfig, Member, compile_ruleset
from socle.network.firewall.nft import Nft


def main() -> None:
    apps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    members = [
        Member(f"app{a}", "default", {"tier": f"t{a % 5}"}, f"10.213.{(3 * a + i) // 250}.{(3 * a + i) % 250 + 2}", {"http": 20000 + a})
        for a in range(apps)
        for i in range(3)
    ]  # fmt: skip
    policies = {
        f"p{a}": NetworkPolicySpec.model_validate(
            {"app": f"app{a}", "ingress": [{"from": [{"app": f"app{(a + 1) % apps}"}, {"cidr": "10.99.0.0/16"}], "ports": ["http"]}]}
        )
        for a in range(apps)
    }  # fmt: skip
    policies["admin"] = NetworkPolicySpec.model_validate(
        {"host": True, "ingress": [{"from": [{"cidr": "192.168.0.0/16"}], "ports": [22, 7780]}]}
    )
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        ruleset = compile_ruleset(policies, members, FirewallConfig())
        times.append(time.perf_counter() - start)
    result: dict[str, object] = {
        "apps": apps,
        "instances": len(members),
        "policies": len(policies),
        "rules": len(ruleset.rules),
        "script_bytes": len(ruleset.script),
        "compile_ms_best": round(min(times) * 1000, 2),
    }
    if os.geteuid() == 0:
        ns = f"bench-fw-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            nft = Nft(netns=ns)
            loads = []
            for _ in range(2):
                start = time.perf_counter()
                nft.load_sync(ruleset.script)
                loads.append(time.perf_counter() - start)
            result["load_first_ms"] = round(loads[0] * 1000, 1)
            result["load_replace_ms"] = round(loads[1] * 1000, 1)
            # The drift check: the table read back without counters, every 10 s and after
            # each load.
            reads = []
            for _ in range(rounds):
                start = time.perf_counter()
                assert nft.listing_sync() is not None
                reads.append(time.perf_counter() - start)
            result["drift_read_ms_best"] = round(min(reads) * 1000, 1)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
