"""The audit hash chain: deleted, reordered and edited lines are found, with their number."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from socle.cli.secrets import verify
from socle.secrets.core.audit_chain import digest, last_line_hash, seal_line, verify_lines


def _chain(count: int) -> list[bytes]:
    lines: list[bytes] = []
    prev = ""
    for number in range(count):
        line = seal_line({"type": "request", "n": number, "request": {"path": f"p/{number}"}}, prev)
        lines.append(line)
        prev = digest(line)
    return lines


def test_intact_chain_verifies() -> None:
    lines = _chain(6)
    result = verify_lines(lines)
    assert result.ok and result.lines == 6 and result.last_hash == digest(lines[-1])
    for line in lines:
        json.loads(line)  # every line is plain JSON


def test_deleted_line_is_found() -> None:
    lines = _chain(6)
    del lines[2]
    result = verify_lines(lines)
    assert not result.ok and result.bad_line == 3 and "chain broken" in result.reason


def test_deleted_first_line_is_found() -> None:
    result = verify_lines(_chain(4)[1:])
    assert not result.ok and result.bad_line == 1


def test_reordered_lines_are_found() -> None:
    lines = _chain(6)
    lines[3], lines[4] = lines[4], lines[3]
    result = verify_lines(lines)
    assert not result.ok and result.bad_line == 4


def test_edited_line_is_found_at_that_line() -> None:
    lines = _chain(6)
    lines[2] = lines[2].replace(b'"p/2"', b'"p/X"')
    result = verify_lines(lines)
    assert not result.ok and result.bad_line == 3 and "modified" in result.reason


def test_edited_line_with_recomputed_hash_is_found_at_the_next_line() -> None:
    lines = _chain(6)
    entry = json.loads(lines[2])
    prev = entry.pop("prev_hash")
    entry.pop("hash")
    entry["request"]["path"] = "forged"
    lines[2] = seal_line(entry, prev)
    result = verify_lines(lines)
    assert not result.ok and result.bad_line == 4


def test_garbage_line_is_found() -> None:
    lines = _chain(3)
    lines.insert(1, b"not json at all")
    result = verify_lines(lines)
    assert not result.ok and result.bad_line == 2


def test_last_line_hash_continues_a_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    assert last_line_hash(path) == ""
    lines = _chain(3)
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert last_line_hash(path) == digest(lines[-1])
    big = seal_line({"blob": "x" * 10_000}, digest(lines[-1]))
    with path.open("ab") as handle:
        handle.write(big + b"\n")
    assert last_line_hash(path) == digest(big)
    assert verify_lines(path.read_bytes().splitlines()).ok


def test_cli_verify_reports_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _chain(5)
    path.write_bytes(b"\n".join(lines) + b"\n")
    runner = CliRunner()
    ok = runner.invoke(verify, [str(path), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    del lines[1]
    path.write_bytes(b"\n".join(lines) + b"\n")
    bad = runner.invoke(verify, [str(path), "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["bad_line"] == 2
    text = runner.invoke(verify, [str(path)])
    assert text.exit_code == 1 and "line 2" in text.output
