"""The firewall service without nft: what it says when it cannot enforce, and who is a member."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from socle.model.status import InstanceState
from socle.network.firewall.compiler import FirewallConfig
from socle.network.firewall.nft import Nft
from socle.network.firewall.service import Enforcement, Firewall, decide_enforcement, members_of
from socle.runtime.driver import InstanceStatus


def status(app: str, state: InstanceState, address: str = "10.213.0.2") -> InstanceStatus:
    return InstanceStatus(
        id=f"{app}-0", app=app, release="r", ordinal=0, state=state, ready=False, pid=None,
        address=address, ports={"http": 1}, restarts=0, started_at=None, ready_since=None,
        last_exit_code=None, isolation="none", labels={"tier": "x"},
    )  # fmt: skip


class Runtime:
    def __init__(self, statuses: list[InstanceStatus]) -> None:
        self.statuses = statuses

    def instances(self) -> list[InstanceStatus]:
        return self.statuses

    def subscribe(self, listener: Callable[[InstanceStatus], None]) -> None:
        pass


def test_turned_off_says_so() -> None:
    assert decide_enforcement(False, isolated=True) == Enforcement(
        False, "turned off (SOCLE_FIREWALL=0)"
    )


def test_only_instances_whose_process_is_up_are_members() -> None:
    found = members_of(
        [
            status("a", InstanceState.RUNNING),
            status("b", InstanceState.UNHEALTHY),
            status("c", InstanceState.BACKOFF),
            status("d", InstanceState.FAILED),
            status("e", InstanceState.STARTING, address=""),
        ]
    )
    assert [m.app for m in found] == ["a", "b"]
    assert found[0].labels == {"tier": "x"} and found[0].ports == {"http": 1}


def test_not_enforced_loads_nothing_and_says_why() -> None:
    # nft is never run: a binary that does not exist would fail any call.
    nft = Nft(binary="/nonexistent/nft")
    firewall = Firewall(
        Runtime([status("api", InstanceState.RUNNING)]),
        FirewallConfig(),
        Enforcement(False, "the control plane does not run as root"),
        nft=nft,
    )
    firewall.set("api-in", {"app": "api", "ingress": []})
    assert asyncio.run(firewall.apply()) is False
    assert firewall.policy_status("api-in") == (
        False,
        "not enforced: the control plane does not run as root",
    )
    shown = asyncio.run(firewall.status())
    assert not shown["enforced"] and not shown["loaded"]
    assert shown["policies"] == {"api-in": ["deny other ingress to app api"]}
    assert {r["rule"] for r in shown["rules"]} >= {"socle:default-deny"}
    assert all(r["packets"] is None for r in shown["rules"])


def test_app_policies_are_not_enforced_without_isolation() -> None:
    firewall = Firewall(
        Runtime([]), FirewallConfig(isolate=False), Enforcement(True, "no root netns"),
        nft=Nft(binary="/nonexistent/nft"),
    )  # fmt: skip
    firewall.set("api-in", {"app": "api", "ingress": []})
    enforced, message = firewall.policy_status("api-in")
    assert not enforced and "instances share the host's network" in message


class MemoryNft(Nft):
    """nft's table kept in memory (the real one is tested in tests/integration/network)."""

    def __init__(self) -> None:
        super().__init__(binary="/nonexistent/nft")
        self.live: str | None = None

    def load_sync(self, script: str, *, check_only: bool = False) -> None:
        self.live = script[script.index(f"table inet {self.table_name} {{") :]

    def listing_sync(self) -> str | None:
        return self.live


def test_drift_is_corrected_once_and_never_counted_again_with_nothing_to_load() -> None:
    nft = MemoryNft()
    firewall = Firewall(
        Runtime([]), FirewallConfig(isolate=False), Enforcement(True, "", isolated=False),
        nft=nft,
    )  # fmt: skip
    host = {"host": True, "ingress": [{"ports": [22], "from": [{"cidr": "10.0.0.0/8"}]}]}

    async def scenario() -> None:
        firewall.set("ssh", host)
        await firewall.release()
        assert firewall.loads == 1 and not await firewall.correct_drift()
        nft.live = nft.live.replace("accept", "drop") if nft.live else None  # edited by hand
        assert await firewall.correct_drift() and firewall.loads == 2
        assert "changed outside Socle" in firewall.last_drift and "accept" in str(nft.live)
        firewall.set("ssh", None)
        await firewall.apply()  # no policy left: an empty table of ours stays loaded
        nft.live = None  # deleted by hand: nothing of ours needs loading any more
        assert await firewall.correct_drift() and firewall.drift_corrections == 2
        for _ in range(3):
            assert not await firewall.correct_drift()
        assert firewall.drift_corrections == 2

    asyncio.run(scenario())
