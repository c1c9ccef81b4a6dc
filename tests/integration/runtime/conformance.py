"""Conformance suite for any RuntimeDriver: written once, run against every driver.

Subclass :class:`RuntimeDriverConformance` in a test module and provide these fixtures:

``driver``       a started driver, closed (stopping its instances) at teardown;
``make_driver``  ``await make_driver()`` gives another started driver on the *same* state
                 (run folder), for re-adoption; the suite closes the earlier one first;
``app_dir``      a release folder holding ``testapp.py`` as ``server.py``.

Drivers under test must be configured to rotate logs at 4 KiB (3 backups) and with a fast
restart backoff (same shape: immediate, then doubling; crash loop after 5 restarts), so
that the suite runs in seconds. Processes are checked from the host (``os.kill(pid, 0)``),
so the suite is for drivers that run instances on this host.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from socle.model.app import HealthSpec
from socle.runtime.driver import (
    InstanceId,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    LogLine,
    Mount,
    ReleaseId,
    RuntimeDriver,
)

HTTP_HEALTH = {"http": {"port": "http", "path": "/health"}, "interval": "2s"}


def make_spec(app_dir: Path, name: str, **overrides: Any) -> InstanceSpec:
    """An instance of the test app; ``env`` entries add to the defaults."""
    env = {"APP_GREETING": "hello"}
    env.update(overrides.pop("env", {}))
    health = overrides.pop("health", HTTP_HEALTH)
    fields: dict[str, Any] = {
        "id": InstanceId(name),
        "app": "demo",
        "release": ReleaseId("r1"),
        "ordinal": 0,
        "command": [sys.executable, "server.py"],
        "workdir": app_dir,
        "env": env,
        "ports": ["http"],
        "health": HealthSpec.model_validate(health) if health else None,
        "stop_grace": 5.0,
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


def state_mount(app_dir: Path) -> dict[str, Any]:
    """A writable folder for the app (its release is read-only in a sandbox), bound at the
    same path inside, so the app and the test agree on where it is in every mode."""
    state = app_dir.parent / "state"
    state.mkdir(exist_ok=True)
    return {"env": {"APP_STATE_DIR": str(state)}, "mounts": [Mount(state, str(state))]}


def status_of(driver: RuntimeDriver, instance_id: str) -> InstanceStatus | None:
    return next((s for s in driver.instances() if s.id == instance_id), None)


async def wait_for(
    driver: RuntimeDriver,
    instance_id: str,
    check: Callable[[InstanceStatus], bool],
    timeout: float = 10.0,
) -> InstanceStatus:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = status_of(driver, instance_id)
        if status is not None and check(status):
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {instance_id}; last status: {status}")


def ready_after(restarts: int) -> Callable[[InstanceStatus], bool]:
    return lambda s: s.ready and s.restarts >= restarts and s.pid is not None


async def http_get(port: int, path: str = "/info") -> tuple[int, bytes]:
    def fetch() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            code = exc.code
            exc.close()
            return code, b""

    return await asyncio.to_thread(fetch)


async def info(status: InstanceStatus) -> dict[str, Any]:
    code, body = await http_get(status.ports["http"])
    assert code == 200
    data: dict[str, Any] = json.loads(body)
    return data


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


async def wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not alive(pid), f"pid {pid} still alive"


def app_processes(instance_id: str) -> list[int]:
    """Host pids running the test app for one instance (to spot duplicates)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1]
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:] == [b"server.py"] and f"SOCLE_INSTANCE={instance_id}".encode() in environ:
            found.append(int(entry))
    return found


def conformance_processes(instance_id: str) -> list[int]:
    """Host pids whose environment names this instance (anything it started)."""
    found = []
    needle = f"SOCLE_INSTANCE={instance_id}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ:
            found.append(int(entry))
    return found


DriverMaker = Callable[[], Awaitable[Any]]


class RuntimeDriverConformance:
    """What every runtime driver must do. See the module docstring for the fixtures."""

    async def test_http_app_becomes_ready_and_serves(
        self, driver: RuntimeDriver, app_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen: list[InstanceStatus] = []
        driver.subscribe(seen.append)
        spec = make_spec(app_dir, "web-0", secret_env={"DB_PASSWORD": "pw-canary"})
        first = await driver.run(spec)
        assert first.id == "web-0" and first.address == "127.0.0.1"
        status = await wait_for(driver, "web-0", ready_after(0))
        assert status.state is InstanceState.RUNNING
        assert status.ports["http"] > 0
        assert {s.state for s in seen} >= {InstanceState.STARTING, InstanceState.RUNNING}
        assert any(s.ready for s in seen)
        assert status.isolation
        code, body = await http_get(status.ports["http"], "/health")
        assert (code, body) == (200, b"ok")

    async def test_environment_is_clean_and_complete(
        self, make_driver: DriverMaker, app_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SOCLE_TOKEN", "control-plane-secret")
        monkeypatch.setenv("PYTHONPATH", "/nonexistent")
        driver = await make_driver()  # started with the variables above in its environment
        spec = make_spec(app_dir, "env-0", secret_env={"DB_PASSWORD": "pw-canary"})
        await driver.run(spec)
        status = await wait_for(driver, "env-0", ready_after(0))
        env = (await info(status))["env"]
        assert env["APP_GREETING"] == "hello"
        assert env["DB_PASSWORD"] == "pw-canary"
        assert env["PORT"] == env["PORT_HTTP"] == str(status.ports["http"])
        assert (env["SOCLE_APP"], env["SOCLE_INSTANCE"], env["SOCLE_RELEASE"]) == (
            "demo",
            "env-0",
            "r1",
        )
        assert "SOCLE_TOKEN" not in env
        assert "PYTHONPATH" not in env
        assert "PATH" in env

    async def test_kill_9_restarts_and_is_ready_again_quickly(
        self, driver: RuntimeDriver, app_dir: Path
    ) -> None:
        await driver.run(make_spec(app_dir, "kill-0"))
        before = await wait_for(driver, "kill-0", ready_after(0))
        assert before.pid is not None
        killed_at = time.monotonic()
        os.kill(before.pid, signal.SIGKILL)
        after = await wait_for(driver, "kill-0", ready_after(1), timeout=5)
        elapsed_ms = (time.monotonic() - killed_at) * 1000
        print(f"\nkill -9 -> ready again: {elapsed_ms:.0f} ms")
        assert after.pid != before.pid
        assert after.restarts == 1
        assert after.last_exit_code is not None and after.last_exit_code != 0
        assert (await info(after))["pid"] > 0

    async def test_restart_never_stays_exited(self, driver: RuntimeDriver, app_dir: Path) -> None:
        spec = make_spec(
            app_dir,
            "never-0",
            env={"APP_MODE": "exit", "APP_EXIT_CODE": "7"},
            restart="never",
            health=None,
        )
        await driver.run(spec)
        status = await wait_for(driver, "never-0", lambda s: s.state is InstanceState.EXITED)
        assert status.last_exit_code == 7
        assert "7" in status.message
        await asyncio.sleep(0.3)
        status = await wait_for(driver, "never-0", lambda s: s.state is InstanceState.EXITED)
        assert status.restarts == 0 and status.pid is None and not status.ready

    async def test_on_failure_restarts_failures_only(
        self, driver: RuntimeDriver, app_dir: Path
    ) -> None:
        ok = make_spec(
            app_dir,
            "onf-ok",
            env={"APP_MODE": "exit", "APP_EXIT_CODE": "0"},
            restart="on-failure",
            health=None,
        )
        bad = make_spec(
            app_dir,
            "onf-bad",
            env={"APP_MODE": "exit", "APP_EXIT_CODE": "2", "APP_DELAY": "0.1"},
            restart="on-failure",
            health=None,
        )
        await driver.run(ok)
        await driver.run(bad)
        done = await wait_for(driver, "onf-ok", lambda s: s.state is InstanceState.EXITED)
        assert done.last_exit_code == 0 and done.restarts == 0
        failing = await wait_for(driver, "onf-bad", lambda s: s.restarts >= 2)
        assert failing.last_exit_code == 2
        assert failing.state is not InstanceState.EXITED

    async def test_crash_loop_is_reported(self, driver: RuntimeDriver, app_dir: Path) -> None:
        spec = make_spec(app_dir, "crash-0", env={"APP_MODE": "crash"}, health=None)
        await driver.run(spec)
        status = await wait_for(
            driver, "crash-0", lambda s: s.state is InstanceState.CRASHLOOP, timeout=15
        )
        assert status.restarts >= 5
        assert status.last_exit_code == 3
        assert "3" in status.message and "boom" in status.message
        assert not status.ready

    async def test_failing_health_check_makes_unhealthy_then_restarts(
        self, driver: RuntimeDriver, app_dir: Path
    ) -> None:
        seen: list[InstanceStatus] = []
        driver.subscribe(seen.append)
        health = {**HTTP_HEALTH, "interval": "100ms", "failureThreshold": 2}
        await driver.run(make_spec(app_dir, "sick-0", health=health, stop_grace=1.0))
        first = await wait_for(driver, "sick-0", ready_after(0))
        # Only what follows the fault counts: on a loaded host a slow first boot may
        # already have been declared unhealthy (connection refused) once.
        mark, restarts = len(seen), first.restarts
        (app_dir / "unhealthy").write_text("yes")
        await wait_for(driver, "sick-0", lambda s: s.restarts >= restarts + 1)
        states = [s.state for s in seen[mark:] if s.id == "sick-0"]
        assert InstanceState.UNHEALTHY in states
        unhealthy = next(s for s in seen[mark:] if s.state is InstanceState.UNHEALTHY)
        assert not unhealthy.ready and "503" in unhealthy.message
        (app_dir / "unhealthy").unlink()
        again = await wait_for(driver, "sick-0", ready_after(restarts + 1))
        assert again.pid != first.pid

    async def test_graceful_stop_sends_sigterm(self, driver: RuntimeDriver, app_dir: Path) -> None:
        state = state_mount(app_dir)
        await driver.run(make_spec(app_dir, "stop-0", **state))
        status = await wait_for(driver, "stop-0", ready_after(0))
        assert status.pid is not None
        await driver.stop(InstanceId("stop-0"))
        assert (state["mounts"][0].source / "terminated").read_text() == "SIGTERM"
        assert not alive(status.pid)
        assert status_of(driver, "stop-0") is None
        await driver.stop(InstanceId("stop-0"))  # idempotent

    async def test_stop_kills_after_grace(self, driver: RuntimeDriver, app_dir: Path) -> None:
        state = state_mount(app_dir)
        env = {"APP_IGNORE_TERM": "1", **state.pop("env")}
        spec = make_spec(app_dir, "stubborn-0", env=env, stop_grace=0.5, **state)
        await driver.run(spec)
        status = await wait_for(driver, "stubborn-0", ready_after(0))
        assert status.pid is not None
        started = time.monotonic()
        await driver.stop(InstanceId("stubborn-0"))
        took = time.monotonic() - started
        assert 0.5 <= took < 5.0
        assert not alive(status.pid)
        assert not (spec.mounts[0].source / "terminated").exists()

    async def test_logs_since_follow_and_rotation(
        self, driver: RuntimeDriver, app_dir: Path
    ) -> None:
        spec = make_spec(app_dir, "logs-0", env={"APP_MODE": "spam"}, health=None)
        await driver.run(spec)
        followed: list[LogLine] = []

        async def follow() -> None:
            async for line in driver.logs(InstanceId("logs-0"), follow=True):
                followed.append(line)

        task = asyncio.create_task(follow())
        await asyncio.sleep(1.5)  # about 300 lines of 60 bytes: rotates several times at 4 KiB
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        numbers = [int(line.text.split()[1]) for line in followed if line.text.startswith("line")]
        assert len(numbers) > 150
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "gap or repeat"
        assert all(line.stream == "stdout" and line.instance == "logs-0" for line in followed)

        history = [line async for line in driver.logs(InstanceId("logs-0"))]
        times = [line.time for line in history]
        assert times == sorted(times)
        assert len(history) < len(numbers) + 200  # older files were rotated away
        middle = history[len(history) // 2].time
        recent = [line async for line in driver.logs(InstanceId("logs-0"), since=middle)]
        assert recent and all(line.time >= middle for line in recent)
        assert len(recent) < len(history)

    async def test_instances_outlive_the_driver_and_are_readopted(
        self, driver: RuntimeDriver, make_driver: DriverMaker, app_dir: Path
    ) -> None:
        for name in ("keep-0", "keep-1"):
            await driver.run(make_spec(app_dir, name))
        before = {n: await wait_for(driver, n, ready_after(0)) for n in ("keep-0", "keep-1")}
        await driver.close(stop_instances=False)
        for status in before.values():
            assert status.pid is not None and alive(status.pid)
            assert (await info(status))["pid"] > 0  # still serving with no control plane

        second: RuntimeDriver = await make_driver()
        for name, old in before.items():
            new = await wait_for(second, name, ready_after(0))
            assert new.pid == old.pid and new.restarts == 0
            assert new.ports == old.ports
            assert app_processes(name) == [old.pid]
        again = await second.run(make_spec(app_dir, "keep-0"))  # known id: no new process
        assert again.pid == before["keep-0"].pid
        assert app_processes("keep-0") == [before["keep-0"].pid]

    async def test_instance_killed_while_no_driver_runs_is_restarted(
        self, driver: RuntimeDriver, make_driver: DriverMaker, app_dir: Path
    ) -> None:
        for name in ("gone-0", "stay-0"):
            await driver.run(make_spec(app_dir, name))
        gone = await wait_for(driver, "gone-0", ready_after(0))
        stay = await wait_for(driver, "stay-0", ready_after(0))
        await driver.close(stop_instances=False)
        assert gone.pid is not None
        os.kill(gone.pid, signal.SIGKILL)
        await wait_gone(gone.pid)
        await asyncio.sleep(0.2)  # let the shim record the exit and leave

        second: RuntimeDriver = await make_driver()
        restarted = await wait_for(second, "gone-0", ready_after(1))
        assert restarted.pid != gone.pid and restarted.last_exit_code not in (None, 0)
        kept = await wait_for(second, "stay-0", ready_after(0))
        assert kept.pid == stay.pid and kept.restarts == 0
        assert len(app_processes("gone-0")) == 1

    async def test_missing_program_fails_at_once_with_the_reason(
        self, driver: RuntimeDriver, app_dir: Path
    ) -> None:
        spec = make_spec(app_dir, "missing-0", command=["./no-such-program", "x"])
        first = await driver.run(spec)  # a start failure is a state, not an exception
        assert first.state is InstanceState.FAILED and not first.ready and first.pid is None
        assert "no-such-program" in first.message and str(app_dir) in first.message
        await asyncio.sleep(0.3)  # never retried: the same spec cannot start later
        status = await wait_for(driver, "missing-0", lambda s: s.state is InstanceState.FAILED)
        assert status.restarts == 0 and status.pid is None
        again = await driver.run(spec)  # idempotent: still the same failed instance
        assert again.state is InstanceState.FAILED and again.restarts == 0
        await driver.stop(InstanceId("missing-0"))
        assert status_of(driver, "missing-0") is None

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            ({"env": {"BAD": "a\0b"}}, "value of environment variable BAD holds a NUL byte"),
            (
                {"secret_env": {"DB_PASSWORD": "pw-canary\0tail"}},
                "secret value of environment variable DB_PASSWORD holds a NUL byte",
            ),
            ({"env": {"A=B": "x"}}, "invalid environment variable name 'A=B'"),
            ({"command": [sys.executable, "server.py\0x"]}, "run.command[1] holds a NUL byte"),
        ],
        ids=["nul-env", "nul-secret", "bad-env-name", "nul-command"],
    )
    async def test_unstartable_spec_fails_at_once(
        self, driver: RuntimeDriver, app_dir: Path, overrides: dict[str, Any], expected: str
    ) -> None:
        status = await driver.run(make_spec(app_dir, "nul-0", **overrides))
        assert status.state is InstanceState.FAILED
        assert expected in status.message
        assert "pw-canary" not in status.message, "a secret value is never shown"
        assert conformance_processes("nul-0") == []

    async def test_exec_failure_is_a_quick_exit_with_the_reason(
        self, driver: RuntimeDriver, app_dir: Path
    ) -> None:
        script = app_dir / "broken.sh"
        script.write_text("#!/nonexistent/interpreter\n")
        script.chmod(0o755)
        spec = make_spec(app_dir, "broken-0", command=["./broken.sh"], restart="never")
        await driver.run(spec)
        status = await wait_for(
            driver, "broken-0", lambda s: s.state is InstanceState.EXITED, timeout=3
        )
        assert status.last_exit_code not in (None, 0)
        assert "No such file or directory" in status.message
        lines = [line.text async for line in driver.logs(InstanceId("broken-0"))]
        assert any("No such file or directory" in text for text in lines)
