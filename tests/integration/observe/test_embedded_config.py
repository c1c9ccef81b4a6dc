"""A generated config replaces the live one only once its checker (a real process, here a
small shell script standing in for promtool/amtool) accepts it; a refusal keeps the live
file, removes the candidate and hands back the checker's words."""

from __future__ import annotations

import stat
from pathlib import Path

from socle.observe._embedded import replace_checked, run_check


def checker(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "check.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o700)
    return [str(script)]


async def test_an_accepted_config_replaces_the_live_one(tmp_path: Path) -> None:
    live = tmp_path / "daemon.yml"
    live.write_text("old: 1\n")
    ok = checker(tmp_path, 'grep -q "new" "$1"')
    assert await replace_checked(live, "new: 2\n", ok) is None
    assert live.read_text() == "new: 2\n"
    assert stat.S_IMODE(live.stat().st_mode) == 0o600
    assert not (tmp_path / "daemon.yml.new").exists()


async def test_a_refused_config_never_replaces_the_live_one(tmp_path: Path) -> None:
    live = tmp_path / "daemon.yml"
    live.write_text("old: 1\n")
    refuse = checker(tmp_path, 'echo "FAILED: bad field in $1"; exit 1')
    out = await replace_checked(live, "bad: [\n", refuse)
    assert out is not None and "bad field" in out and "daemon.yml.new" in out
    assert live.read_text() == "old: 1\n"
    assert not (tmp_path / "daemon.yml.new").exists()


async def test_without_a_checker_the_config_is_just_renamed(tmp_path: Path) -> None:
    live = tmp_path / "daemon.yml"
    assert await replace_checked(live, "a: 1\n", None) is None
    assert live.read_text() == "a: 1\n"


async def test_a_hanging_checker_is_killed_and_counts_as_a_refusal(tmp_path: Path) -> None:
    code, out = await run_check(checker(tmp_path, "exec sleep 60"), timeout=0.5)
    assert code != 0 and "timed out" in out
