"""Fixtures for runtime tests: real drivers on tmp folders, and a janitor that kills by PID.

Every process a test starts is found again at teardown from the instance records (shim,
child, app as pid + start time) and from the pids the driver reported, and killed if still
there; test cgroups live under a per-test parent folder that is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from socle.model.app import App
from socle.runtime.driver import InstanceStatus
from socle.runtime.local import BackoffPolicy, LocalDriver
from socle.runtime.local import cgroups as cg
from socle.runtime.local.procs import ProcRef, kill_ref
from socle.runtime.local.records import RecordStore

TEST_APP = Path(__file__).with_name("testapp.py")
FAST_BACKOFF = BackoffPolicy(base=0.05, factor=2.0, cap=1.0, reset_after=10.0, crashloop_after=5)
"""Same shape as production backoff, 10x faster, so crash loops show up in about a second."""
LOG_MAX_BYTES = 4096

SANDBOX_OK = os.geteuid() == 0 and shutil.which("bwrap") is not None
SANDBOX = pytest.param(
    "sandbox",
    marks=[
        pytest.mark.root,
        pytest.mark.skipif(not SANDBOX_OK, reason="needs root and bubblewrap"),
    ],
)

DriverFactory = Callable[..., Awaitable[LocalDriver]]


class Janitor:
    """Remembers every process the tests saw and kills what is left at the end."""

    def __init__(self) -> None:
        self.refs: set[ProcRef] = set()

    def track(self, status: InstanceStatus) -> None:
        if status.pid is not None:
            ref = ProcRef.of(status.pid)
            if ref is not None:
                self.refs.add(ref)

    def sweep(self, run_dir: Path) -> None:
        for record in RecordStore(run_dir).load_all():
            cg.kill_all(record.cgroups)
            kill_ref(record.child, signal.SIGKILL, group=True)
            for ref in (record.app, record.child, record.shim):
                kill_ref(ref, signal.SIGKILL)
        for ref in self.refs:
            kill_ref(ref, signal.SIGKILL)
        unmount_under(run_dir)


def unmount_under(root: Path) -> None:
    """Lazily unmount what a test left mounted below ``root`` (instances' scratch tmpfs of
    instances that were never stopped), deepest first."""
    prefix = str(root) + "/"
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        target = line.split()[4]
        if target.startswith(prefix):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


@pytest.fixture
def janitor() -> Janitor:
    return Janitor()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A release folder holding the test app as ``server.py``."""
    root = tmp_path / "release"
    root.mkdir()
    shutil.copy(TEST_APP, root / "server.py")
    return root


@pytest.fixture(params=[SANDBOX, "none"])
def isolation_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
def cgroup_parent() -> str:
    """A cgroup folder of this test only (removed at teardown by ``make_driver``)."""
    return f"socle-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_driver(
    tmp_path: Path, isolation_mode: str, janitor: Janitor, cgroup_parent: str
) -> AsyncIterator[DriverFactory]:
    """Factory of started LocalDrivers sharing one run_dir (for re-adoption tests)."""
    drivers: list[LocalDriver] = []
    parent = cgroup_parent

    async def factory(**overrides: Any) -> LocalDriver:
        options: dict[str, Any] = {
            "log_max_bytes": LOG_MAX_BYTES,
            "log_backups": 3,
            "isolation": isolation_mode,
            "backoff": FAST_BACKOFF,
            "cgroup_parent": parent,
        }
        options.update(overrides)
        driver = LocalDriver(tmp_path / "run", tmp_path / "logs", **options)
        await driver.start()
        driver.subscribe(janitor.track)
        drivers.append(driver)
        return driver

    yield factory
    try:
        if drivers:
            await drivers[-1].close(stop_instances=True)
    finally:
        janitor.sweep(tmp_path / "run")
        for base in cg.detect(parent).parents.values():
            cg.remove([str(p) for p in base.iterdir() if p.is_dir()])
            cg.remove([str(base)])


@pytest.fixture
async def driver(make_driver: DriverFactory) -> LocalDriver:
    return await make_driver()


def app_with_build(repo: Path, name: str, build: list[dict[str, Any]]) -> App:
    """An App ``name`` whose code is ``repo/app/main.py`` (written here) and whose release is
    made by ``build``: for the tests of sandboxed build steps."""
    (repo / "app").mkdir(parents=True, exist_ok=True)
    (repo / "app" / "main.py").write_text("print('hi')\n")
    return App.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": name},
            "spec": {"run": {"command": ["python3", "main.py"], "workdir": "app"}, "build": build},
        }
    )
