"""strays.reap against real processes dressed as shims of two run folders.

Fake shims are plain Python processes whose command line carries the ``--status=`` marker
of a run folder, like real shims; one forks a child (an app) that must die with it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from socle.runtime.local import procs, strays
from socle.runtime.local.records import InstanceRecord

SHIM = """
import os, sys, time
if sys.argv[-1] == "fork":
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)", "app"])
time.sleep(120)
"""


def alive(pid: int) -> bool:
    return procs.start_time(pid) is not None


Spawner = Callable[..., "subprocess.Popen[bytes]"]


def wait(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    started: list[subprocess.Popen[bytes]] = []

    def run(run_dir: Path, instance: str, *extra: str) -> subprocess.Popen[bytes]:
        status = f"--status={run_dir}/instances/{instance}.exit"
        proc = subprocess.Popen([sys.executable, "-c", SHIM, status, "--", *extra])
        started.append(proc)
        return proc

    yield run
    for proc in started:
        for pid in procs.children(proc.pid):
            procs.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def record(instance: str, shim: procs.ProcRef | None) -> InstanceRecord:
    spec = {"id": instance, "app": "web", "release": "r1", "ordinal": 0, "command": ["x"]}
    return InstanceRecord(spec=spec, ports={}, isolation="none", sandbox=False, shim=shim)


def test_reap_stops_unrecorded_shims_of_this_home_only(spawn: Spawner, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "a" / "run", tmp_path / "b" / "run"
    kept = spawn(ours, "kept-0")
    stray = spawn(ours, "stray-0", "fork")
    other = spawn(theirs, "stray-0")
    wait(lambda: len(procs.children(stray.pid)) == 1 and len(strays.find_shims(ours)) == 2)
    app = procs.children(stray.pid)[0]
    wait(lambda: b"app" in Path(f"/proc/{app}/cmdline").read_bytes())

    found = {s.instance: s.proc.pid for s in strays.find_shims(ours)}
    assert found == {"kept-0": kept.pid, "stray-0": stray.pid}, "a child is not a shim"
    kept_ref = procs.ProcRef.of(kept.pid)
    done = strays.reap(ours, [record("kept-0", kept_ref)], [])

    assert len(done) == 1 and "stray-0" in done[0] and "2 processes" in done[0]
    stray.wait(10)
    wait(lambda: not alive(app))
    assert alive(kept.pid), "the recorded shim is left for re-adoption"
    assert alive(other.pid), "another home's shim is never touched"
    assert strays.reap(ours, [record("kept-0", kept_ref)], []) == []
