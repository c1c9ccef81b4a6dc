"""The log service: live tails follow new lines in store order and are bounded; Socle's own
records reach the store through the handler, masked, and the handler's queue is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from socle.observe.logs.logql import LogQuery, parse
from socle.observe.logs.service import LogService, StoreHandler, TooManyTails
from socle.observe.logs.store import Entry, LogStore
from socle.redact import Redactor
from socle.tasks import TaskGroup


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[LogService]:
    redactor = Redactor()
    redactor.add("pa55word-xyz")
    store = LogStore(tmp_path / "store", redact=redactor)
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    svc = LogService(store, logs_dir, dict, TaskGroup("logs"), max_tails=1, tick=0.05)
    await svc.start()
    yield svc
    await svc.stop()


def q(text: str) -> LogQuery:
    query = parse(text)
    assert isinstance(query, LogQuery)
    return query


async def test_a_tail_follows_new_lines_and_tails_are_bounded(service: LogService) -> None:
    await service.push([Entry(1, "old", {"app": "t"})])
    tail = service.tail(q('{app="t"}'), limit=10)
    assert (await anext(tail)).line == "old"
    with pytest.raises(TooManyTails):
        service.check_tail_capacity()
    # A line with an *older* timestamp stored later is still followed (store order).
    await service.push([Entry(0, "late", {"app": "t"}), Entry(5, "new", {"app": "u"})])
    assert (await asyncio.wait_for(anext(tail), 30)).line == "late"
    await tail.aclose()
    service.check_tail_capacity()  # the slot is free again


async def test_own_records_are_stored_masked(service: LogService) -> None:
    logging.getLogger("socle.test").warning("connecting with pa55word-xyz to %s", "db")
    await service.run_pass()
    rows = await service.select(q('{app="socle"} |= "connecting"'), 0, 2**62, limit=10)
    assert [r.line for r in rows] == [
        '{"level": "warning", "logger": "socle.test", "msg": "connecting with **** to db"}'
    ]


def test_the_handler_queue_is_bounded() -> None:
    handler = StoreHandler("default", "host:1", capacity=3)
    logger = logging.getLogger("socle.bounded-test")
    logger.addHandler(handler)
    try:
        for i in range(5):
            logger.warning("record %d", i)
    finally:
        logger.removeHandler(handler)
    entries = handler.drain()
    assert [e.line.split('"msg": ')[1] for e in entries] == [
        '"record 2"}',
        '"record 3"}',
        '"record 4"}',
    ]
    assert handler.dropped == 2


async def test_tails_opened_together_stay_bounded(service: LogService) -> None:
    """Two clients pass the capacity check before either starts iterating: the second
    one is still refused once the first holds the only slot."""
    service.check_tail_capacity()
    first = service.tail(q('{app="t"}'), limit=10)
    service.check_tail_capacity()  # the first has not started yet: passes too
    second = service.tail(q('{app="t"}'), limit=10)
    following = asyncio.ensure_future(anext(first))
    for _ in range(1000):  # until the first tail holds its slot (no timing assumption)
        if service.tails:
            break
        await asyncio.sleep(0.01)
    assert service.tails == 1
    with pytest.raises(TooManyTails):
        await anext(second)
    assert service.tails == 1
    following.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await following
    await first.aclose()
    assert service.tails == 0


async def test_a_tail_ends_when_its_caller_is_no_longer_allowed(
    service: LogService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live tail asks again, every few seconds, whether its token still opens the API:
    revoked, the tail ends (and frees its slot) instead of following the logs for ever."""
    import socle.observe.logs.service as service_module

    monkeypatch.setattr(service_module, "TAIL_RECHECK", 0.0)
    await service.push([Entry(1, "before", {"app": "r"})])
    valid = True
    asked = 0

    async def allowed() -> bool:
        nonlocal asked
        asked += 1
        return valid

    tail = service.tail(q('{app="r"}'), limit=10, allowed=allowed)
    assert (await anext(tail)).line == "before"
    await service.push([Entry(2, "while valid", {"app": "r"})])
    assert (await asyncio.wait_for(anext(tail), 30)).line == "while valid"
    assert asked >= 1
    valid = False  # the token is revoked
    await service.push([Entry(3, "after revocation", {"app": "r"})])
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(tail), 30)
    service.check_tail_capacity()  # the slot is free again
