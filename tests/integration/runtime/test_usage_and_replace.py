"""What the observe layer needs from the local driver, on real processes (both isolation
modes): where each instance's usage is read (cgroups, pids, last health probe), and a
restart on request (a remediation) that goes through the restart policy."""

from __future__ import annotations

from pathlib import Path

from socle.observe.metrics.instances import read_usage
from socle.runtime.local import LocalDriver
from tests.integration.runtime.conformance import make_spec, ready_after, wait_for


async def test_resources_then_replace(
    driver: LocalDriver, app_dir: Path, isolation_mode: str
) -> None:
    spec = make_spec(app_dir, "usage-0", health={"tcp": {"port": "http"}, "interval": "0.2s"})
    await driver.run(spec)
    first = await wait_for(driver, "usage-0", ready_after(0))

    async def probed() -> None:
        await wait_for(
            driver,
            "usage-0",
            lambda _: any(r.health_ok for r in driver.resources()),
        )

    await probed()
    (item,) = driver.resources()
    assert item.status.id == "usage-0" and item.health_seconds is not None
    assert item.health_seconds >= 0
    if isolation_mode == "sandbox":
        assert item.cgroups, "a sandboxed instance has cgroup folders"
    usage = read_usage(item)
    assert usage.processes >= 1
    assert usage.memory_bytes is not None and usage.memory_bytes > 1_000_000
    assert usage.open_fds is not None and usage.open_fds >= 3
    assert usage.cpu_seconds is not None and usage.cpu_seconds > 0

    assert driver.replace("usage-0", "alert test")
    assert not driver.replace("usage-0", "again"), "one request at a time"
    assert not driver.replace("nope-0", "unknown")
    after = await wait_for(driver, "usage-0", ready_after(1), timeout=30)
    assert after.pid != first.pid and after.restarts == 1
