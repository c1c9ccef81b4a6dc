"""Per-app uids: stable, distinct, never 0, from the high range, kept owner-only; uid blocks
owned by one home per host."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

import socle.runtime.local.uids as uids_module
from socle.errors import RuntimeDriverError
from socle.runtime.local.uids import BASE, BLOCK, BLOCKS, UidAllocator, block_start, claim_block


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "host" / "uid-blocks.json"


def test_stable_distinct_and_high(tmp_path: Path, registry: Path) -> None:
    uids = UidAllocator(tmp_path, registry)
    first, second = uids.uid("api"), uids.uid("worker")
    assert first != second
    assert min(first, second) >= BASE
    assert uids.uid("api") == first
    again = UidAllocator(tmp_path, registry)
    assert again.uid("api") == first and again.uid("worker") == second
    assert stat.S_IMODE((tmp_path / "uids.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600


def test_skips_ids_in_passwd(tmp_path: Path, registry: Path) -> None:
    uids = UidAllocator(tmp_path, registry)
    assert uids.start <= uids.uid("a") < uids.start + BLOCK


def test_two_homes_hash_to_different_blocks(tmp_path: Path) -> None:
    assert block_start(tmp_path / "one") != block_start(tmp_path / "two")


def _colliding_homes(base: Path) -> tuple[Path, Path]:
    """Two run folders whose paths hash to the same block (the 1 in BLOCKS case)."""
    seen: dict[int, Path] = {}
    for i in range(BLOCKS * 4):
        home = base / f"home-{i}"
        start = block_start(home)
        if start in seen:
            return seen[start], home
        seen[start] = home
    raise AssertionError("no collision found")  # pragma: no cover - pigeonhole says otherwise


def test_homes_whose_paths_collide_still_get_disjoint_uids(tmp_path: Path, registry: Path) -> None:
    one, two = _colliding_homes(tmp_path)
    one.mkdir()
    two.mkdir()
    assert block_start(one) == block_start(two)
    first, second = UidAllocator(one, registry), UidAllocator(two, registry)
    a, b = first.uid("app"), second.uid("app")
    assert first.start != second.start
    assert abs(a - b) >= 1 and not (second.start <= a < second.start + BLOCK)
    # Both keep their blocks across restarts, whoever starts first.
    assert UidAllocator(two, registry).uid("app") == b
    assert UidAllocator(one, registry).uid("app") == a
    owners = json.loads(registry.read_text())["blocks"]
    assert owners == {str(first.start): str(one), str(second.start): str(two)}


def test_a_deleted_home_gives_its_block_back(tmp_path: Path, registry: Path) -> None:
    one, two = _colliding_homes(tmp_path)
    one.mkdir()
    taken = UidAllocator(one, registry).start
    one.rmdir()
    two.mkdir()
    assert UidAllocator(two, registry).start == taken


def test_two_old_homes_on_one_block_are_refused(tmp_path: Path, registry: Path) -> None:
    """Homes made before the registry both recorded the hashed block: the second to start
    must not run its apps with the first one's uids."""
    one, two = _colliding_homes(tmp_path)
    start = block_start(one)
    for home in (one, two):
        home.mkdir()
        ledger = {"format": 1, "base": start, "apps": {"app": start}}
        (home / "uids.json").write_text(json.dumps(ledger))
    assert UidAllocator(one, registry).uid("app") == start
    with pytest.raises(RuntimeDriverError, match="share uids"):
        UidAllocator(two, registry).uid("other")


def test_a_block_a_process_runs_in_is_skipped(
    tmp_path: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids of a live process (a home from before the registry) are not handed out again."""
    home = tmp_path / "home"
    home.mkdir()
    busy = block_start(home) + 3
    # /proc is the host's: which uids run there is fed in, the claim itself is real.
    monkeypatch.setattr(uids_module, "_process_uids", lambda: {0, busy})
    start = claim_block(home, None, registry)
    assert start != block_start(home)


def test_a_broken_ledger_is_refused_not_reset(tmp_path: Path, registry: Path) -> None:
    (tmp_path / "uids.json").write_text("{not json")
    with pytest.raises(RuntimeDriverError, match="unreadable"):
        UidAllocator(tmp_path, registry).uid("a")


def test_a_broken_registry_is_refused_not_reset(tmp_path: Path, registry: Path) -> None:
    registry.parent.mkdir()
    registry.write_text('{"blocks": {"x": 1}}')
    with pytest.raises(RuntimeDriverError, match="malformed"):
        UidAllocator(tmp_path, registry).uid("a")
