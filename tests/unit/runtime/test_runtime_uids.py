"""Per-app uids: stable, distinct, never 0, from the high range, kept owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from socle.errors import RuntimeDriverError
from socle.runtime.local.uids import BASE, BLOCK, UidAllocator, block_start


def test_stable_distinct_and_high(tmp_path: Path) -> None:
    uids = UidAllocator(tmp_path)
    first, second = uids.uid("api"), uids.uid("worker")
    assert first != second
    assert min(first, second) >= BASE
    assert uids.uid("api") == first
    again = UidAllocator(tmp_path)
    assert again.uid("api") == first and again.uid("worker") == second
    assert stat.S_IMODE((tmp_path / "uids.json").stat().st_mode) == 0o600


def test_skips_ids_in_passwd(tmp_path: Path) -> None:
    start = block_start(tmp_path)
    assert start <= UidAllocator(tmp_path).uid("a") < start + BLOCK


def test_two_homes_use_different_blocks(tmp_path: Path) -> None:
    assert block_start(tmp_path / "one") != block_start(tmp_path / "two")


def test_a_broken_ledger_is_refused_not_reset(tmp_path: Path) -> None:
    (tmp_path / "uids.json").write_text("{not json")
    with pytest.raises(RuntimeDriverError, match="unreadable"):
        UidAllocator(tmp_path).uid("a")
