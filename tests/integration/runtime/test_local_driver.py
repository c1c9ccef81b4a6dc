"""LocalDriver specifics: sandbox limits and namespaces, rlimits, secrets, shim failures."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import resource
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from socle.errors import RuntimeDriverError
from socle.runtime.driver import InstanceId, InstanceState
from socle.runtime.local import BackoffPolicy, LocalDriver, read_logs
from socle.runtime.local import cgroups as cg
from socle.runtime.local.records import RecordStore

_NAME = "socle_tests_runtime_conformance"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).with_name("conformance.py")
    )
    assert _spec is not None and _spec.loader is not None
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
conformance = sys.modules[_NAME]
make_spec = conformance.make_spec
wait_for = conformance.wait_for
ready_after = conformance.ready_after
info = conformance.info
alive = conformance.alive

SANDBOX_OK = os.geteuid() == 0 and shutil.which("bwrap") is not None
sandbox_only = pytest.mark.parametrize(
    "isolation_mode",
    [
        pytest.param(
            "sandbox",
            marks=[
                pytest.mark.root,
                pytest.mark.skipif(not SANDBOX_OK, reason="needs root and bubblewrap"),
            ],
        )
    ],
)
plain_only = pytest.mark.parametrize("isolation_mode", ["none"])
MiB = 2**20


def record_of(driver: LocalDriver, instance_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        RecordStore(driver.run_dir).record_path(instance_id).read_text()
    )
    return data


def cgroup_dir(driver: LocalDriver, instance_id: str, controller: str) -> Path:
    dirs = record_of(driver, instance_id)["cgroups"]
    assert isinstance(dirs, list)
    return next(Path(d) for d in dirs if f"/{controller}/" in d)


@sandbox_only
async def test_sandbox_memory_limit_is_set_and_enforced(driver: LocalDriver, app_dir: Path) -> None:
    spec = make_spec(
        app_dir,
        "oom-0",
        env={"APP_MODE": "alloc", "APP_ALLOC_MB": "256", "APP_DELAY": "0.3"},
        memory=64 * MiB,
        cpu=0.5,
        restart="never",
        health=None,
    )
    await driver.run(spec)
    memory = cgroup_dir(driver, "oom-0", "memory")
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 * MiB)
    cpu = cgroup_dir(driver, "oom-0", "cpu")
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (cgroup_dir(driver, "oom-0", "pids") / "pids.max").read_text().strip() == "4096"
    status = await wait_for(driver, "oom-0", lambda s: s.state is InstanceState.EXITED)
    assert status.last_exit_code == 128 + signal.SIGKILL
    assert "out-of-memory" in status.message
    texts = [line.text for line in read_logs(driver.logs_dir, "oom-0")]
    assert "allocating" in texts and "allocated" not in texts
    await driver.stop(InstanceId("oom-0"))
    assert not memory.exists() and not cpu.exists()


@sandbox_only
async def test_sandbox_has_its_own_pid_namespace(driver: LocalDriver, app_dir: Path) -> None:
    await driver.run(make_spec(app_dir, "ns-0"))
    status = await wait_for(driver, "ns-0", ready_after(0))
    inside = await info(status)
    assert inside["pid"] <= 3  # bubblewrap's init is 1, the app 2
    assert inside["procs"] == [1, inside["pid"]]  # no host process is visible
    assert status.pid != inside["pid"] and status.pid is not None and alive(status.pid)
    assert inside["hostname"] == "ns-0"
    assert "namespaces(pid,mount,ipc,uts)" in status.isolation
    assert driver.isolation().mode == "namespaces+cgroups"


@sandbox_only
async def test_sandbox_hides_driver_files_and_host_is_read_only(
    driver: LocalDriver, app_dir: Path, tmp_path: Path
) -> None:
    probe = app_dir / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "def writable(path):\n"
        "    try:\n"
        "        open(path, 'w').close(); return True\n"
        "    except OSError:\n"
        "        return False\n"
        "print('run', sorted(os.listdir(sys.argv[1])) if os.path.isdir(sys.argv[1]) else None)\n"
        "print('etc', writable('/etc/socle-probe'), 'release', writable('mine.txt'),"
        " 'tmp', writable('/tmp/x'))\n"
    )
    run_dir = str(driver.run_dir)
    spec = make_spec(
        app_dir,
        "fs-0",
        command=[sys.executable, "probe.py", run_dir],
        restart="never",
        health=None,
    )
    await driver.run(spec)
    await wait_for(driver, "fs-0", lambda s: s.state is InstanceState.EXITED)
    texts = [line.text for line in read_logs(driver.logs_dir, "fs-0")]
    assert "run []" in texts or "run None" in texts
    assert "etc False release False tmp True" in texts  # the release is read-only
    assert not Path("/etc/socle-probe").exists()


@plain_only
async def test_plain_mode_says_so_and_caps_memory_with_rlimit(
    driver: LocalDriver, app_dir: Path
) -> None:
    isolation = driver.isolation()
    assert isolation.mode == "rlimits"
    assert isolation.warning is not None and "not sandboxed" in isolation.warning
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY and hard < 256 * MiB:
        pytest.skip("RLIMIT_AS already lower than the test needs")
    spec = make_spec(
        app_dir,
        "rlimit-0",
        env={"APP_MODE": "alloc", "APP_ALLOC_MB": "512"},
        memory=200 * MiB,
        restart="never",
        health=None,
    )
    await driver.run(spec)
    status = await wait_for(driver, "rlimit-0", lambda s: s.state is InstanceState.EXITED)
    assert status.last_exit_code == 1
    assert "MemoryError" in status.message
    assert status.isolation.startswith("plain processes")


async def test_secret_values_are_never_written(
    driver: LocalDriver, app_dir: Path, tmp_path: Path
) -> None:
    canary = "s3cr3t-canary-value"
    spec = make_spec(app_dir, "secret-0", secret_env={"DB_PASSWORD": canary})
    await driver.run(spec)
    status = await wait_for(driver, "secret-0", ready_after(0))
    assert (await info(status))["env"]["DB_PASSWORD"] == canary
    record = RecordStore(driver.run_dir).record_path("secret-0")
    assert record.stat().st_mode & 0o777 == 0o600
    assert "DB_PASSWORD" in record.read_text()  # the name, so a new driver knows to wait
    for folder in (driver.run_dir, driver.logs_dir):
        for path in folder.rglob("*"):
            if path.is_file():
                assert canary.encode() not in path.read_bytes(), path
    assert canary not in repr(spec) and canary not in json.dumps(status.to_dict())


async def test_readopted_instance_waits_for_secrets_before_restarting(
    driver: LocalDriver, make_driver: Callable[[], Awaitable[LocalDriver]], app_dir: Path
) -> None:
    spec = make_spec(app_dir, "sec-0", secret_env={"DB_PASSWORD": "pw"})
    await driver.run(spec)
    first = await wait_for(driver, "sec-0", ready_after(0))
    await driver.close(stop_instances=False)
    os.kill(first.pid, signal.SIGKILL)
    await conformance.wait_gone(first.pid)
    await asyncio.sleep(0.2)
    second: LocalDriver = await make_driver()
    waiting = await wait_for(second, "sec-0", lambda s: "DB_PASSWORD" in s.message)
    assert waiting.state is InstanceState.BACKOFF and waiting.pid is None
    await second.run(spec)  # the control plane hands the values back
    again = await wait_for(second, "sec-0", ready_after(1))
    assert (await info(again))["env"]["DB_PASSWORD"] == "pw"


async def test_killed_shim_takes_its_app_down_and_is_restarted(
    driver: LocalDriver, app_dir: Path
) -> None:
    await driver.run(make_spec(app_dir, "shim-0"))
    first = await wait_for(driver, "shim-0", ready_after(0))
    shim = record_of(driver, "shim-0")["shim"]
    assert isinstance(shim, list)
    os.kill(shim[0], signal.SIGKILL)
    again = await wait_for(driver, "shim-0", ready_after(1))
    assert first.pid is not None and not alive(first.pid)
    assert again.pid != first.pid
    assert len(conformance.app_processes("shim-0")) == 1


async def test_logs_readable_after_stop(driver: LocalDriver, app_dir: Path) -> None:
    await driver.run(make_spec(app_dir, "after-0"))
    await wait_for(driver, "after-0", ready_after(0))
    await driver.stop(InstanceId("after-0"))
    texts = [line.text for line in read_logs(driver.logs_dir, "after-0")]
    assert any(text.startswith("listening on") for text in texts)
    assert not RecordStore(driver.run_dir).record_path("after-0").exists()
    assert not RecordStore(driver.run_dir).status_path("after-0").exists()
    streamed = [line.text async for line in driver.logs(InstanceId("after-0"))]
    assert streamed == texts


@plain_only
async def test_exec_health_check_uses_instance_env_and_workdir(
    driver: LocalDriver, app_dir: Path
) -> None:
    check = app_dir / "check.sh"
    check.write_text('#!/bin/sh\ntest "$APP_GREETING" = hello && test -f server.py\n')
    check.chmod(0o755)
    health = {"exec": {"command": ["./check.sh"]}, "interval": "100ms"}
    await driver.run(make_spec(app_dir, "exec-0", health=health))
    status = await wait_for(driver, "exec-0", ready_after(0))
    assert status.state is InstanceState.RUNNING


@plain_only
async def test_tcp_health_check(driver: LocalDriver, app_dir: Path) -> None:
    health = {"tcp": {"port": "http"}, "interval": "100ms"}
    await driver.run(make_spec(app_dir, "tcp-0", health=health))
    await wait_for(driver, "tcp-0", ready_after(0))


@plain_only
async def test_bad_arguments_are_refused(driver: LocalDriver, app_dir: Path) -> None:
    with pytest.raises(RuntimeDriverError, match="invalid instance id"):
        await driver.run(make_spec(app_dir, "../escape"))
    nowhere = await driver.run(make_spec(app_dir / "missing", "nowhere-0"))
    assert nowhere.state is InstanceState.FAILED and "workdir" in nowhere.message
    with pytest.raises(RuntimeDriverError, match="isolation"):
        LocalDriver(driver.run_dir, driver.logs_dir, isolation="vm")
    with pytest.raises(RuntimeDriverError, match="not in its ports"):
        await driver.run(make_spec(app_dir, "noport-0", ports=[]))
    await driver.run(make_spec(app_dir, "fixed-0"))
    with pytest.raises(RuntimeDriverError, match="cannot change them"):
        await driver.run(make_spec(app_dir, "fixed-0", ports=["http", "admin"]))


CONTROL_PLANE = """
import asyncio, json, sys
from pathlib import Path
from socle.model.app import HealthSpec
from socle.runtime.driver import InstanceId, InstanceSpec, ReleaseId
from socle.runtime.local import LocalDriver

run_dir, logs_dir, mode, parent, app_dir = sys.argv[1:6]

async def main():
    driver = LocalDriver(Path(run_dir), Path(logs_dir), isolation=mode, cgroup_parent=parent)
    await driver.start()
    health = HealthSpec.model_validate({"http": {"port": "http", "path": "/health"}})
    spec = InstanceSpec(id=InstanceId("cp-0"), app="demo", release=ReleaseId("r1"), ordinal=0,
        command=[sys.executable, "server.py"], workdir=Path(app_dir), ports=["http"],
        health=health)
    await driver.run(spec)
    while not driver.instances()[0].ready:
        await asyncio.sleep(0.02)
    print(json.dumps(driver.instances()[0].to_dict()), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_kill_9_of_the_control_plane_leaves_apps_running(
    make_driver: Callable[[], Awaitable[LocalDriver]],
    app_dir: Path,
    tmp_path: Path,
    isolation_mode: str,
    cgroup_parent: str,
) -> None:
    script = tmp_path / "control_plane.py"
    script.write_text(CONTROL_PLANE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tmp_path / "run"),
        str(tmp_path / "logs"),
        isolation_mode,
        cgroup_parent,
        str(app_dir),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        before = json.loads(line)
    finally:
        proc.kill()
        await proc.wait()
    assert alive(before["pid"])
    code, _ = await conformance.http_get(before["ports"]["http"], "/health")
    assert code == 200  # serving with its control plane dead

    driver = await make_driver()  # the run folder lock died with the killed process
    after = await wait_for(driver, "cp-0", ready_after(0))
    assert after.pid == before["pid"] and after.restarts == 0
    assert conformance.app_processes("cp-0") == [before["pid"]]


@plain_only
async def test_one_supervisor_per_run_folder(driver: LocalDriver) -> None:
    other = LocalDriver(driver.run_dir, driver.logs_dir, isolation="none")
    with pytest.raises(RuntimeDriverError, match="already supervising"):
        await other.start()


def _rewrite_record(driver: LocalDriver, instance_id: str, **fields: object) -> None:
    path = RecordStore(driver.run_dir).record_path(instance_id)
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


async def test_shim_no_record_names_is_stopped_at_start(
    driver: LocalDriver, make_driver: Callable[[], Awaitable[LocalDriver]], app_dir: Path
) -> None:
    """kill -9 between spawning a new instance and recording it: nobody knows the shim."""
    await driver.run(make_spec(app_dir, "lost-0"))
    before = await wait_for(driver, "lost-0", ready_after(0))
    assert before.pid is not None
    await driver.close(stop_instances=False)
    RecordStore(driver.run_dir).record_path("lost-0").unlink()  # as if never written

    second = await make_driver()
    await conformance.wait_gone(before.pid)
    assert conformance.conformance_processes("lost-0") == []
    assert second.instances() == []


async def test_shim_spawned_after_the_last_record_is_stopped_and_restarted(
    driver: LocalDriver, make_driver: Callable[[], Awaitable[LocalDriver]], app_dir: Path
) -> None:
    """kill -9 between a restart's spawn and its record: the record still says 'no shim'."""
    await driver.run(make_spec(app_dir, "again-0"))
    before = await wait_for(driver, "again-0", ready_after(0))
    assert before.pid is not None
    await driver.close(stop_instances=False)
    _rewrite_record(driver, "again-0", shim=None, child=None, app=None)

    second = await make_driver()
    await conformance.wait_gone(before.pid)
    after = await wait_for(second, "again-0", ready_after(1))
    assert after.pid != before.pid
    assert conformance.app_processes("again-0") == [after.pid], "exactly one, supervised"


async def test_another_homes_processes_are_never_touched(
    driver: LocalDriver,
    make_driver: Callable[[], Awaitable[LocalDriver]],
    app_dir: Path,
    tmp_path: Path,
    isolation_mode: str,
    cgroup_parent: str,
) -> None:
    """Two run folders, the same instance id: a start of one never reaps the other's."""
    other = LocalDriver(
        tmp_path / "other-run",
        tmp_path / "other-logs",
        isolation=isolation_mode,
        backoff=BackoffPolicy(base=0.05, cap=1.0),
        cgroup_parent=f"{cgroup_parent}-other",
    )
    await other.start()
    try:
        await other.run(make_spec(app_dir, "twin-0"))
        theirs = await wait_for(other, "twin-0", ready_after(0))
        await driver.run(make_spec(app_dir, "twin-0"))
        ours = await wait_for(driver, "twin-0", ready_after(0))
        await driver.close(stop_instances=False)
        RecordStore(driver.run_dir).record_path("twin-0").unlink()

        await make_driver()  # reaps our unrecorded twin-0, and only ours
        assert ours.pid is not None and theirs.pid is not None
        await conformance.wait_gone(ours.pid)
        assert alive(theirs.pid)
        assert (await info(theirs))["pid"] > 0
    finally:
        await other.close(stop_instances=True)
        for base in cg.detect(f"{cgroup_parent}-other").parents.values():
            cg.remove([str(base)])


async def test_a_restart_that_cannot_start_is_counted_and_heals(
    driver: LocalDriver, app_dir: Path
) -> None:
    """FAILED is for a spec's first start only: an instance that ran retries, like a crash."""
    script = app_dir / "app.py"  # a script whose interpreter the sandbox shows (shebang)
    script.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path('server.py')\n")
    script.chmod(0o755)
    await driver.run(make_spec(app_dir, "heal-0", command=["./app.py"]))
    first = await wait_for(driver, "heal-0", ready_after(0))
    assert first.pid is not None
    script.chmod(0o644)  # the host breaks for a while
    os.kill(first.pid, signal.SIGKILL)
    broken = await wait_for(driver, "heal-0", lambda s: "not executable" in s.message)
    assert broken.state in (InstanceState.BACKOFF, InstanceState.CRASHLOOP)
    assert "could not start" in broken.message
    script.chmod(0o755)  # and is fixed: the instance comes back on its own
    healed = await wait_for(driver, "heal-0", lambda s: s.ready and s.restarts >= 2, timeout=20)
    assert healed.pid not in (None, first.pid)


@sandbox_only
async def test_an_instance_without_a_memory_limit_still_gets_one(
    driver: LocalDriver, app_dir: Path
) -> None:
    """Limits by default: unlimited, one app could take the host's memory and have the OOM
    killer pick the control plane or its database."""
    from socle.runtime.local.cgroups import DEFAULT_MEMORY

    spec = make_spec(app_dir, "nolimit-0", restart="never", health=None)
    assert spec.memory is None
    await driver.run(spec)
    memory = cgroup_dir(driver, "nolimit-0", "memory")
    assert int((memory / "memory.limit_in_bytes").read_text()) == DEFAULT_MEMORY
