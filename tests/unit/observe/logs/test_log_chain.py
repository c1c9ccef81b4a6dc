"""The segments' integrity chain: every way of tampering is reported, retention is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from socle.observe.logs.chain import CHAIN, HEAD, SEGMENTS, Chain, file_digest, verify
from socle.observe.logs.model import LogStoreError


def _seal(chain: Chain, root: Path, n: int, content: bytes) -> None:
    path = root / SEGMENTS / f"{n:08d}.parquet"
    path.write_bytes(content)
    chain.append(
        {
            "kind": "seal",
            "n": n,
            "file": path.name,
            "sha256": file_digest(path),
            "rows": 1,
            "bytes": len(content),
            "min_ts": n,
            "max_ts": n,
            "max_seq": n,
            "apps": ["a"],
        }
    )


def _three(tmp_path: Path) -> Chain:
    (tmp_path / SEGMENTS).mkdir()
    chain = Chain(tmp_path)
    for n in (1, 2, 3):
        _seal(chain, tmp_path, n, f"segment {n}".encode())
    return chain


def test_an_intact_chain_with_retention_drops_verifies(tmp_path: Path) -> None:
    chain = _three(tmp_path)
    chain.append({"kind": "drop", "n": 1, "reason": "age"})
    (tmp_path / SEGMENTS / "00000001.parquet").unlink()
    report = verify(tmp_path)
    assert report.ok, report.problems
    assert (report.segments, report.dropped, report.lines) == (2, 1, 4)
    assert Chain(tmp_path).head == report.head == chain.head
    assert [s.n for s in Chain(tmp_path).live()] == [2, 3]


def test_a_modified_segment_is_reported(tmp_path: Path) -> None:
    _three(tmp_path)
    (tmp_path / SEGMENTS / "00000002.parquet").write_bytes(b"segment X")
    assert verify(tmp_path).problems == [
        "segment 2 (00000002.parquet) was modified (SHA-256 differs)"
    ]


def test_a_removed_segment_is_reported(tmp_path: Path) -> None:
    _three(tmp_path)
    (tmp_path / SEGMENTS / "00000003.parquet").unlink()
    assert "missing" in verify(tmp_path).problems[0]


def test_an_added_segment_is_reported(tmp_path: Path) -> None:
    _three(tmp_path)
    (tmp_path / SEGMENTS / "00000009.parquet").write_bytes(b"forged")
    assert "not in the chain" in verify(tmp_path).problems[0]


def test_an_edited_or_removed_chain_line_is_reported(tmp_path: Path) -> None:
    _three(tmp_path)
    path = tmp_path / CHAIN
    lines = path.read_bytes().splitlines()
    entry = json.loads(lines[1])
    entry["rows"] = 99
    edited = [lines[0], json.dumps(entry, separators=(",", ":")).encode(), lines[2]]
    path.write_bytes(b"\n".join(edited) + b"\n")
    assert any("edited" in p for p in verify(tmp_path).problems)
    path.write_bytes(b"\n".join([lines[0], lines[2]]) + b"\n")
    problems = verify(tmp_path).problems
    assert any("does not follow" in p for p in problems)
    assert any("not in the chain" in p for p in problems)  # segment 2 lost its line


def test_lines_cut_off_the_end_are_reported_by_the_head(tmp_path: Path) -> None:
    _three(tmp_path)
    path = tmp_path / CHAIN
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(lines[:2]) + b"\n")
    (tmp_path / SEGMENTS / "00000003.parquet").unlink()
    problems = verify(tmp_path).problems
    assert any(HEAD in p for p in problems)


def test_a_segment_removed_and_chained_again_as_a_drop_is_reported(tmp_path: Path) -> None:
    """Someone with the files removes segment 2 and appends a well-formed drop line (and a
    new head): retention would never drop it while segment 1 is kept."""
    chain = _three(tmp_path)
    (tmp_path / SEGMENTS / "00000002.parquet").unlink()
    chain.append({"kind": "drop", "n": 2, "reason": "age"})
    problems = verify(tmp_path).problems
    assert len(problems) == 1 and "drops segment 2 while the older segment 1" in problems[0]


def test_drop_lines_retention_could_not_write_are_reported(tmp_path: Path) -> None:
    chain = _three(tmp_path)
    chain.append({"kind": "drop", "n": 7, "reason": "age"})
    chain.append({"kind": "drop", "n": 1, "reason": "because"})
    (tmp_path / SEGMENTS / "00000001.parquet").unlink()
    problems = verify(tmp_path).problems
    assert any("drops segment 7, which is not live" in p for p in problems), problems
    assert any("drop reason 'because' unknown" in p for p in problems), problems


def test_an_append_torn_by_a_crash_is_cut_off_at_the_next_open(tmp_path: Path) -> None:
    """Power loss mid-append leaves half a line (the head still names the line before):
    the store opens again, and the chain verifies."""
    chain = _three(tmp_path)
    head = chain.head
    with open(tmp_path / CHAIN, "ab") as handle:
        handle.write(b'{"kind":"seal","n":4,"file":"000')
    again = Chain(tmp_path)
    assert again.head == head and [s.n for s in again.live()] == [1, 2, 3]
    assert verify(tmp_path).ok
    _seal(again, tmp_path, 4, b"segment 4")
    assert verify(tmp_path).ok


def test_a_last_line_cut_by_hand_is_not_silently_repaired(tmp_path: Path) -> None:
    """Cutting the newest seal line in half (to pass for a torn append) is refused: the
    head still names the whole line."""
    _three(tmp_path)
    content = (tmp_path / CHAIN).read_bytes()
    (tmp_path / CHAIN).write_bytes(content[: len(content) - 40])
    with pytest.raises(LogStoreError, match="partial line"):
        Chain(tmp_path)
    assert (tmp_path / CHAIN).read_bytes() == content[: len(content) - 40]  # untouched


def test_an_unreadable_chain_line_is_refused_with_where(tmp_path: Path) -> None:
    _three(tmp_path)
    lines = (tmp_path / CHAIN).read_bytes().splitlines(keepends=True)
    lines[1] = b"garbage\n"
    (tmp_path / CHAIN).write_bytes(b"".join(lines))
    with pytest.raises(LogStoreError, match=f"{CHAIN}:2: not a chain line"):
        Chain(tmp_path)
