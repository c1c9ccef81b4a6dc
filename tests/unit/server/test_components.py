"""The component registry: start in order, stop in reverse, a failed start stops what started."""

from __future__ import annotations

import asyncio

import pytest

from socle.server.components import Components


class Part:
    def __init__(
        self,
        name: str,
        log: list[str],
        *,
        fail_start: bool = False,
        fail_stop: bool = False,
        block: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self._log = log
        self._fail_start = fail_start
        self._fail_stop = fail_stop
        self._block = block

    async def start(self) -> None:
        self._log.append(f"start {self.name}")
        if self._block is not None:
            await self._block.wait()
        if self._fail_start:
            raise RuntimeError(f"{self.name} cannot start")

    async def stop(self) -> None:
        self._log.append(f"stop {self.name}")
        if self._fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


async def test_start_in_order_stop_in_reverse() -> None:
    log: list[str] = []
    components = Components([Part("store", log), Part("engine", log), Part("api", log)])
    await components.start()
    assert [c["state"] for c in components.states()] == ["running"] * 3
    await components.stop()
    assert log == [
        "start store",
        "start engine",
        "start api",
        "stop api",
        "stop engine",
        "stop store",
    ]
    assert [c["state"] for c in components.states()] == ["stopped"] * 3


async def test_a_failed_start_stops_what_started_and_reraises() -> None:
    log: list[str] = []
    components = Components(
        [Part("store", log), Part("lease", log, fail_start=True), Part("api", log)]
    )
    with pytest.raises(RuntimeError, match="lease cannot start"):
        await components.start()
    assert log == ["start store", "start lease", "stop store"]
    assert components.states() == [
        {"name": "store", "state": "stopped"},
        {"name": "lease", "state": "failed"},
        {"name": "api", "state": "stopped"},
    ]


async def test_every_stop_runs_even_if_one_fails() -> None:
    log: list[str] = []
    components = Components(
        [Part("store", log), Part("runtime", log, fail_stop=True), Part("api", log)]
    )
    await components.start()
    with pytest.raises(RuntimeError, match="runtime cannot stop"):
        await components.stop()
    assert log[-3:] == ["stop api", "stop runtime", "stop store"]
    assert [c["state"] for c in components.states()] == ["stopped", "failed", "stopped"]


async def test_a_cancelled_start_stops_what_started() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    components = Components([Part("store", log), Part("lease", log, block=gate), Part("api", log)])
    starting = asyncio.ensure_future(components.start())
    while "start lease" not in log:
        await asyncio.sleep(0)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert log == ["start store", "start lease", "stop store"]


def test_names_are_unique() -> None:
    log: list[str] = []
    components = Components([Part("store", log)])
    with pytest.raises(ValueError, match="already registered"):
        components.add(Part("store", log))
    assert components.names == ["store"]


async def test_stop_before_start_does_nothing() -> None:
    log: list[str] = []
    components = Components([Part("store", log)])
    await components.stop()
    assert log == []
