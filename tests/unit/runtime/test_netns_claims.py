"""Instance addresses are claimed machine-wide (files made with O_EXCL): no two control
planes get the same one, an instance keeps its own, strays give theirs back."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from socle.errors import RuntimeDriverError
from socle.runtime.local.netns import BridgeNetwork, enter_argv, home_prefix


def network(tmp_path: Path, prefix: str, cidr: str = "10.213.0.0/29") -> BridgeNetwork:
    return BridgeNetwork(
        network=ipaddress.IPv4Network(cidr), prefix=prefix, claims_root=tmp_path / "claims"
    )


def test_two_control_planes_never_share_an_address(tmp_path: Path) -> None:
    one, two = network(tmp_path, "socle-aaaaaa-"), network(tmp_path, "socle-bbbbbb-")
    first = one.claim("web-0")
    assert str(first) == "10.213.0.2"  # .1 is the gateway, held by the bridge
    assert str(two.claim("web-0")) == "10.213.0.3"  # same instance id, other home
    assert one.claim("web-0") == first  # an instance keeps its own
    assert str(one.claim("api-0", prefer="10.213.0.3")) == "10.213.0.4"  # taken: next free
    assert (one.claims / "10.213.0.2").read_text() == "socle-aaaaaa-web-0"
    assert oct((one.claims / "10.213.0.2").stat().st_mode & 0o777) == "0o600"


def test_a_full_range_says_how_to_grow_it(tmp_path: Path) -> None:
    small = network(tmp_path, "socle-cccccc-", "10.213.0.0/30")  # .1 gateway, .2 only
    small.claim("a-0")
    with pytest.raises(RuntimeDriverError) as info:
        small.claim("b-0")
    assert "no free address left in 10.213.0.0/30" in info.value.message
    assert info.value.hint is not None and "SOCLE_NETWORK_RANGE" in info.value.hint


def test_release_and_sweep_give_addresses_back(tmp_path: Path) -> None:
    one, two = network(tmp_path, "socle-aaaaaa-"), network(tmp_path, "socle-bbbbbb-")
    one.claim("web-0")
    one.claim("web-1")
    two.claim("web-0")
    one.release("web-1")
    assert sorted(p.name for p in one.claims.iterdir()) == ["10.213.0.2", "10.213.0.4"]
    one.sweep(keep=set())  # no namespace of this prefix exists; claims of strays go
    assert [p.read_text() for p in one.claims.iterdir()] == ["socle-bbbbbb-web-0"]


def test_names_are_derived_from_validated_ids() -> None:
    net = BridgeNetwork(prefix=home_prefix(Path("/srv/socle")))
    assert net.netns("web-0").startswith("socle-") and net.netns("web-0").endswith("-web-0")
    assert len(net.veth("web-0")) <= 15 and net.veth("web-0") != net.veth("web-1")
    with pytest.raises(RuntimeDriverError):
        net.netns("../etc")
    argv = enter_argv("socle-x-web-0", ["/bin/true"])
    assert argv[1:] == ["--net=/run/netns/socle-x-web-0", "--", "/bin/true"]


def bridge(tmp_path: Path, name: str, cidr: str, owner: str) -> BridgeNetwork:
    return BridgeNetwork(
        bridge=name,
        network=ipaddress.IPv4Network(cidr),
        owner=owner,
        claims_root=tmp_path / "claims",
    )


def test_one_control_plane_per_bridge(tmp_path: Path) -> None:
    first = bridge(tmp_path, "socle0", "10.213.0.0/16", "/srv/a").hold()
    try:
        with pytest.raises(RuntimeDriverError) as caught:
            bridge(tmp_path, "socle0", "10.213.0.0/16", "/srv/b").hold()
        assert "bridge socle0 is used by another Socle control plane (home /srv/a" in str(
            caught.value.message
        )
        assert caught.value.hint and "SOCLE_NETWORK_BRIDGE=" in caught.value.hint
        with pytest.raises(RuntimeDriverError, match=r"overlaps 10\.213\.0\.0/16 of bridge socle0"):
            bridge(tmp_path, "socle1", "10.213.7.0/24", "/srv/b").hold()
        other = bridge(tmp_path, "socle1", "10.214.0.0/16", "/srv/b").hold()  # its own: fine
        os.close(other)
    finally:
        os.close(first)
    # The holder went away (closing is what its exit, even kill -9, does): free again.
    os.close(bridge(tmp_path, "socle0", "10.213.0.0/16", "/srv/b").hold())
    assert oct((tmp_path / "bridges").stat().st_mode & 0o777) == "0o700"
