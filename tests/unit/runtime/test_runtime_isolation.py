"""The isolation decision and the protections it reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from socle.errors import RuntimeDriverError
from socle.runtime.driver import InstanceId, Mount
from socle.runtime.local.isolation import PROTECTIONS, check_mounts, detect, protections


def test_none_mode_says_plainly_what_is_missing() -> None:
    host = detect("none")
    assert not host.sandbox
    assert host.info.mode == "rlimits"
    assert host.info.warning is not None and "not sandboxed" in host.info.warning
    assert set(host.info.protections) == set(PROTECTIONS)
    assert not host.info.protections["syscall_filter"]
    assert "syscall_filter" in host.info.warning


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(RuntimeDriverError, match="unknown isolation mode"):
        detect("chroot")


def test_protections_as_root_leave_only_ports_unenforced() -> None:
    prot = protections(sandbox=True, per_app_uid=True, limits=True, rlimits=False, netns=True)
    assert [name for name, held in prot.items() if not held] == ["minimal_ports"]
    shared = protections(sandbox=True, per_app_uid=True, limits=True, rlimits=False)
    assert [n for n, held in shared.items() if not held] == ["network_namespace", "minimal_ports"]


def test_the_network_is_reported_as_it_is() -> None:
    """The warning and the features follow the driver's network, whatever the mode."""
    shared = detect("none")
    assert "apps share the host network" in (shared.info.warning or "")
    assert shared.info.features["network"].startswith("shared with the host")
    own = detect("none", netns=True)
    assert own.info.protections["network_namespace"] is True
    assert "share the host network" not in (own.info.warning or "")
    assert "own network namespace" in (own.info.warning or "")
    assert own.info.features["network"].startswith("own network namespace")
    assert own.info.features["seccomp"] == "none" and own.info.features["cgroups"].startswith(
        "none"
    )
    assert set(own.info.to_dict()["features"]) == set(own.info.features)  # type: ignore[arg-type]


def test_protections_without_cgroups_say_limits_are_missing() -> None:
    prot = protections(sandbox=True, per_app_uid=True, limits=False, rlimits=False)
    assert not prot["resource_limits"]


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("data", "normalized absolute"),
        ("/", "normalized absolute"),
        ("/data/../etc", "normalized absolute"),
        ("/proc/sys", "system folder"),
        ("/etc", "system folder"),
        ("/usr/lib/x", "system folder"),
        ("/scratch", "system folder"),
    ],
)
def test_mount_targets_that_would_cover_the_sandbox_are_refused(target: str, why: str) -> None:
    with pytest.raises(RuntimeDriverError, match=why):
        check_mounts(InstanceId("a-0"), [Mount(Path("/srv/vol"), target)])


def test_ordinary_mount_target_passes() -> None:
    check_mounts(InstanceId("a-0"), [Mount(Path("/srv/vol"), "/data")])


def test_a_mount_inside_another_mount_is_refused() -> None:
    """The inner mount point would be made by bubblewrap, as root, inside a volume the app
    writes: a symlink there (``sub -> ../../oldroot/etc``) leads it onto the host."""
    mounts = [Mount(Path("/srv/a"), "/data"), Mount(Path("/srv/b"), "/data/sub/x")]
    with pytest.raises(RuntimeDriverError, match="inside the volume mounted at '/data'"):
        check_mounts(InstanceId("a-0"), mounts)
    check_mounts(
        InstanceId("a-0"), [Mount(Path("/srv/a"), "/data"), Mount(Path("/srv/b"), "/data2")]
    )
