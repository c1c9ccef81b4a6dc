"""The shim as a process: output to JSON lines, exit status, signal forwarding, notify pipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from socle.runtime.local.spawn import SHIM_SOURCE, prepare_shim


def _shim(tmp_path: Path, command: list[str], *extra: str, notify: int | None = None) -> list[str]:
    argv = [
        sys.executable,
        "-I",
        "-S",
        str(SHIM_SOURCE),
        f"--log={tmp_path / 'app.log'}",
        f"--status={tmp_path / 'app.exit'}",
        "--max-bytes=100000",
        "--backups=2",
        f"--chdir={tmp_path}",
        *extra,
    ]
    if notify is not None:
        argv.append(f"--notify-fd={notify}")
    return [*argv, "--", *command]


def _lines(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "app.log").read_text().splitlines()]


def _status(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "app.exit").read_text())
    return data


def test_output_exit_code_and_partial_lines(tmp_path: Path) -> None:
    script = "printf 'out \\303\\251\\n'; echo err >&2; printf 'no newline'; exit 5"
    subprocess.run(_shim(tmp_path, ["/bin/sh", "-c", script]), check=True, timeout=10)
    lines = _lines(tmp_path)
    assert {(line["s"], line["m"]) for line in lines} == {
        ("stdout", "out é"),
        ("stderr", "err"),
        ("stdout", "no newline"),
    }
    assert all(isinstance(line["t"], float) for line in lines)
    assert _status(tmp_path)["code"] == 5 and _status(tmp_path)["signal"] is None
    assert (tmp_path / "app.log").stat().st_mode & 0o777 == 0o600


def test_long_lines_are_cut(tmp_path: Path) -> None:
    script = "head -c 40000 /dev/zero | tr '\\0' x"
    subprocess.run(_shim(tmp_path, ["/bin/sh", "-c", script]), check=True, timeout=10)
    sizes = [len(str(line["m"])) for line in _lines(tmp_path)]
    assert sum(sizes) == 40000 and max(sizes) <= 16384


def test_exec_failure_is_reported_everywhere(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    argv = _shim(tmp_path, ["/nonexistent/program"], notify=write_end)
    subprocess.run(argv, check=True, timeout=10, pass_fds=[write_end])
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        note = pipe.read()
    assert note.startswith("err cannot execute '/nonexistent/program'")
    status = _status(tmp_path)
    assert status["code"] == 127 and "No such file or directory" in str(status["error"])
    assert "No such file or directory" in str(_lines(tmp_path)[0]["m"])


def test_sigterm_is_forwarded_to_the_whole_group(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    # A shell with a background child in its group; neither handles SIGTERM specially.
    argv = _shim(tmp_path, ["/bin/sh", "-c", "sleep 60 & echo $!; wait"], notify=write_end)
    shim = subprocess.Popen(argv, pass_fds=[write_end], start_new_session=True)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as pipe:
            note = pipe.readline()
        assert note.startswith("ok ")
        deadline = time.monotonic() + 5
        while not (tmp_path / "app.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        sleeper = int(str(_lines(tmp_path)[0]["m"]))
        os.kill(shim.pid, signal.SIGTERM)
        assert shim.wait(timeout=5) == 0  # the shim itself exits cleanly after its child
        status = _status(tmp_path)
        assert status["code"] == 128 + signal.SIGTERM and status["signal"] == signal.SIGTERM
        assert not Path(f"/proc/{sleeper}").exists() or "Z" in _state(sleeper)
    finally:
        if shim.poll() is None:
            shim.kill()
            shim.wait()


def _state(pid: int) -> str:
    data = Path(f"/proc/{pid}/stat").read_text()
    return data[data.rfind(")") + 2]


def test_shim_resident_memory(tmp_path: Path) -> None:
    """Informational: what one idle shim costs (printed; bounded loosely)."""
    compiled = prepare_shim(tmp_path)
    assert compiled.suffix == ".pyc"
    argv = _shim(tmp_path, ["/bin/sleep", "30"])
    argv[3] = str(compiled)
    shim = subprocess.Popen(argv, start_new_session=True)
    try:
        time.sleep(0.3)
        rollup = Path(f"/proc/{shim.pid}/smaps_rollup").read_text().split()
        rss_kb = int(rollup[rollup.index("Rss:") + 1])
        anon_kb = int(rollup[rollup.index("Pss_Anon:") + 1])
        print(f"\nshim: RSS {rss_kb / 1024:.1f} MiB, private (Pss_Anon) {anon_kb / 1024:.1f} MiB")
        assert rss_kb < 20 * 1024
    finally:
        os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()


@pytest.mark.parametrize("backups", [0, 2])
def test_rotation_by_size(tmp_path: Path, backups: int) -> None:
    argv = _shim(
        tmp_path, ["/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done"]
    )
    argv = [a if not a.startswith("--max-bytes") else "--max-bytes=2048" for a in argv]
    argv = [a if not a.startswith("--backups") else f"--backups={backups}" for a in argv]
    subprocess.run(argv, check=True, timeout=10)
    names = sorted(p.name for p in tmp_path.glob("app.log*"))
    assert names == ["app.log", *[f"app.log.{n}" for n in range(1, backups + 1)]]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.glob("app.log*"))
