"""The rule files' single writer: bursts coalesce, the last state wins, nothing heard before
the writer runs is lost, failures are recorded and retried (issue 11).

The "files" are a dict the test changes; the "write" copies them into another dict, and can
be held open (a slow promtool on a loaded machine) or made to fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from socle.errors import ObserveError
from socle.observe.metrics.rulefiles import RuleWriter
from socle.tasks import TaskMonitor


class Disk:
    """Where the writer writes: what is live, how many writes, and a gate to hold one."""

    def __init__(self) -> None:
        self.live: dict[str, str] = {}
        self.writes: list[dict[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail: str | None = None

    async def write(self, files: Mapping[str, str]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail is not None:
            raise ObserveError(self.fail)
        self.live = dict(files)
        self.writes.append(dict(files))


async def settle(writer: RuleWriter) -> None:
    for _ in range(2000):
        if not writer.pending:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the writer never settled")


@pytest.fixture
def monitor() -> TaskMonitor:
    return TaskMonitor()


async def test_a_burst_costs_at_most_two_writes_and_the_last_state_wins(
    monitor: TaskMonitor,
) -> None:
    wanted = {"builtin.yml": "b"}
    disk = Disk()
    tasks = monitor.group("prometheus")
    writer = RuleWriter(lambda: wanted, disk.write, tasks)
    await writer.write_now()
    writer.run()
    assert disk.writes == [{"builtin.yml": "b"}]

    disk.gate.clear()  # the next write hangs (promtool slow under load)
    disk.entered.clear()
    wanted = {**wanted, "slo-a.yml": "1"}
    writer.changed()
    await disk.entered.wait()
    for version in range(2, 7):  # changes that arrive while a write is under way
        wanted = {**wanted, "slo-a.yml": str(version)}
        writer.changed()
    assert writer.pending
    disk.gate.set()
    await settle(writer)
    assert disk.live == {"builtin.yml": "b", "slo-a.yml": "6"}
    assert len(disk.writes) == 3  # the first, the one under way, one for the whole burst
    assert writer.to_dict()["files"] == ["builtin.yml", "slo-a.yml"]
    assert writer.writes == 3 and writer.error is None
    await tasks.close()


async def test_changes_heard_before_the_writer_runs_are_written(monitor: TaskMonitor) -> None:
    wanted = {"builtin.yml": "b"}
    disk = Disk()
    tasks = monitor.group("prometheus")
    writer = RuleWriter(lambda: wanted, disk.write, tasks)
    disk.gate.clear()
    first = asyncio.ensure_future(writer.write_now())
    await disk.entered.wait()
    wanted = {**wanted, "slo-shop.yml": "s"}  # applied while Prometheus starts
    writer.changed()
    disk.gate.set()
    await first
    assert disk.live == {"builtin.yml": "b"} and writer.pending
    writer.run()
    await settle(writer)
    assert disk.live == {"builtin.yml": "b", "slo-shop.yml": "s"}
    await tasks.close()


async def test_a_failed_write_is_recorded_retried_and_cleared(monitor: TaskMonitor) -> None:
    wanted = {"builtin.yml": "b"}
    disk = Disk()
    tasks = monitor.group("prometheus")
    now = [100.0]
    writer = RuleWriter(lambda: wanted, disk.write, tasks, clock=lambda: now[0], retry_first=0.01)
    await writer.write_now()
    writer.run()

    disk.fail = "Prometheus refuses the rules in alertrule-bad.yml: parse error"
    wanted = {**wanted, "alertrule-bad.yml": "x"}
    writer.changed()
    for _ in range(2000):
        if monitor.failures >= 2:  # failed, then failed again on its own (the retry)
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the failed write was not retried")
    status = writer.to_dict()
    assert status["error"] == (
        "ObserveError: Prometheus refuses the rules in alertrule-bad.yml: parse error"
    )
    assert status["failed_at"] == 100.0 and status["pending"] is True
    assert status["files"] == ["builtin.yml"]  # what is live is the last good set
    last = monitor.last_failure
    assert last is not None and last.task == "prometheus/rules"
    assert disk.live == {"builtin.yml": "b"}

    disk.fail = None  # e.g. the rule was fixed, or Prometheus is back
    wanted = {"builtin.yml": "b"}
    writer.changed()
    await settle(writer)
    assert writer.error is None and disk.live == {"builtin.yml": "b"}
    await tasks.close()


async def test_a_refusal_before_prometheus_starts_fails_the_start(monitor: TaskMonitor) -> None:
    disk = Disk()
    disk.fail = "Prometheus refuses the rules in socle-builtin.yml: bad"
    writer = RuleWriter(lambda: {"socle-builtin.yml": "b"}, disk.write, monitor.group("p"))
    with pytest.raises(ObserveError, match="refuses the rules"):
        await writer.write_now()
    assert writer.writes == 0
