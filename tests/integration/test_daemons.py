"""The shared daemon helpers against real processes: a daemon left behind is found by its
pid file and stopped only when its command line is ours; a recycled pid is left alone; a
daemon that ignores the polite signal is killed after the grace period."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from socle.daemons import cmdline, recorded_pid, stop_pid, stop_stale

SLEEPER = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, {handler}); "
    "print('ready', flush=True); time.sleep(120)"
)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def sleeper(
    procs: list[subprocess.Popen[bytes]], marker: str, *, ignore_term: bool = False
) -> subprocess.Popen[bytes]:
    handler = "signal.SIG_IGN" if ignore_term else "signal.SIG_DFL"
    argv = [sys.executable, "-c", SLEEPER.format(handler=handler), marker]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"  # its signal handler is in place
    assert marker in cmdline(proc.pid)
    return proc


def gone(proc: subprocess.Popen[bytes]) -> bool:
    """Reaped (our child), so that its pid is really free."""
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_stale_daemon_with_our_command_line_is_stopped(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    conf = str(tmp_path / "daemon.yml")
    proc = sleeper(spawned, conf)
    pid_file = tmp_path / "daemon.pid"
    pid_file.write_text(f"{proc.pid}\n")
    assert recorded_pid(pid_file, lambda argv: conf in argv) == proc.pid
    assert stop_stale(pid_file, sys.executable, conf) is True
    assert gone(proc) and proc.returncode == -15  # SIGTERM was enough


def test_another_program_behind_the_recorded_pid_is_left_alone(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    other = sleeper(spawned, str(tmp_path / "someone-else.yml"))
    pid_file = tmp_path / "daemon.pid"
    pid_file.write_text(f"{other.pid}\n")
    mine = str(tmp_path / "daemon.yml")
    assert recorded_pid(pid_file, lambda argv: mine in argv) is None
    assert stop_stale(pid_file, sys.executable, mine) is False
    assert stop_stale(pid_file, "/usr/sbin/nginx", str(tmp_path)) is False, "another executable"
    assert other.poll() is None, "still running"


@pytest.mark.parametrize("content", ["", "not a pid\n", "999999999\n"])
def test_a_bad_or_dead_pid_file_names_nothing(tmp_path: Path, content: str) -> None:
    pid_file = tmp_path / "daemon.pid"
    pid_file.write_text(content)
    assert recorded_pid(pid_file, lambda argv: True) is None
    assert recorded_pid(tmp_path / "missing.pid", lambda argv: True) is None
    assert stop_stale(pid_file, sys.executable, "") is False


def test_a_daemon_ignoring_the_signal_is_killed_after_the_grace(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    proc = sleeper(spawned, str(tmp_path / "stubborn"), ignore_term=True)
    stop_pid(proc.pid, grace=0.5)
    assert gone(proc) and proc.returncode == -9
