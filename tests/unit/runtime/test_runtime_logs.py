"""Reading rotated JSON-lines logs, with since, and following across rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from socle.runtime.driver import InstanceId, LogLine
from socle.runtime.local.logs import last_line, log_files, read_logs, stream_logs
from socle.runtime.local.shim import Log

ID = InstanceId("app-0")


def _write(path: Path, entries: list[tuple[float, str, str]]) -> None:
    path.write_text("".join(f'{{"t": {t}, "s": "{s}", "m": "{m}"}}\n' for t, s, m in entries))


def test_files_oldest_first_and_since(tmp_path: Path) -> None:
    _write(tmp_path / "app-0.log.2", [(1.0, "stdout", "a"), (2.0, "stderr", "b")])
    _write(tmp_path / "app-0.log.1", [(3.0, "stdout", "c")])
    _write(tmp_path / "app-0.log", [(4.0, "stdout", "d"), (5.0, "stderr", "e")])
    _write(tmp_path / "app-00.log", [(9.0, "stdout", "other instance")])
    (tmp_path / "app-0.log.tmp").write_text("not a backup\n")
    assert [p.name for p in log_files(tmp_path, ID)] == ["app-0.log.2", "app-0.log.1", "app-0.log"]
    lines = list(read_logs(tmp_path, ID))
    assert [line.text for line in lines] == ["a", "b", "c", "d", "e"]
    assert lines[1] == LogLine(2.0, ID, "stderr", "b")
    assert [line.text for line in read_logs(tmp_path, ID, since=3.0)] == ["c", "d", "e"]
    assert last_line(tmp_path, ID) == "e"
    assert last_line(tmp_path, ID, "stdout") == "d"


def test_no_logs_and_garbage_lines(tmp_path: Path) -> None:
    assert list(read_logs(tmp_path, ID)) == []
    assert last_line(tmp_path, ID) is None
    (tmp_path / "app-0.log").write_text('garbage\n{"t": 1, "s": "stdout", "m": "ok"}\n{"t": 2')
    assert [line.text for line in read_logs(tmp_path, ID)] == ["ok"]


def test_shim_log_rotation_keeps_the_configured_backups(tmp_path: Path) -> None:
    log = Log(str(tmp_path / "app-0.log"), max_bytes=1024, backups=2)
    for n in range(200):
        log.write_lines("stdout", [f'line {n} \u00e9 \x01 "quoted"'.encode()])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app-0.log", "app-0.log.1", "app-0.log.2"]
    assert all(p.stat().st_size <= 1024 for p in tmp_path.iterdir())
    texts = [line.text for line in read_logs(tmp_path, ID)]
    numbers = [int(t.split()[1]) for t in texts]
    assert numbers == list(range(numbers[0], 200))
    assert texts[-1] == 'line 199 \u00e9 \x01 "quoted"'


async def test_follow_survives_several_rotations_between_polls(tmp_path: Path) -> None:
    log = Log(str(tmp_path / "app-0.log"), max_bytes=2048, backups=3)
    log.write_lines("stdout", [b"line 0"])
    seen: list[str] = []

    async def follow() -> None:
        async for line in stream_logs(tmp_path, ID, since=None, follow=True):
            seen.append(line.text)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    for n in range(1, 61):  # ~60 bytes a line: two rotations within one 0.2 s poll
        log.write_lines("stdout", [f"line {n}".encode()])
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == [f"line {n}" for n in range(61)]
