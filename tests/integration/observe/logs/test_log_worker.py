"""The log store in its worker process: the same answers as in process, lines masked
before they leave the control plane, only the starter can call it, no orphan left."""

from __future__ import annotations

from collections.abc import Iterator
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from socle.observe.logs.logql import LogQLError, LogQuery, MetricQuery, parse
from socle.observe.logs.model import NS, Chunk, Entry, InstanceLabels, LogStoreError, Staged
from socle.observe.logs.worker import WorkerStore
from socle.redact import Redactor


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerStore]:
    redactor = Redactor()
    redactor.add("s3cret-value-42")
    store = WorkerStore(tmp_path / "store", redact=redactor)
    store.open()
    yield store
    store.close()


def test_calls_round_trip_through_the_worker(worker: WorkerStore, tmp_path: Path) -> None:
    worker.push([Entry(1 * NS, "pushed s3cret-value-42", {"app": "a", "job": "j"})])
    data = b'{"t": 2.0, "s": "stdout", "m": "file s3cret-value-42"}\n'
    assert (
        worker.ingest_chunks([Chunk("a-x-0", InstanceLabels("a", "prod", "r"), data, 7, 60)]) == 1
    )
    assert worker.offsets() == {"a-x-0": (7, 60)}
    query = parse('{app="a"}')
    assert isinstance(query, LogQuery)
    rows = worker.select(query, 0, 10 * NS, forward=True)
    assert [r.line for r in rows] == ["pushed ****", "file ****"]
    assert rows[1].labels == {
        "app": "a",
        "env": "prod",
        "instance": "a-x-0",
        "release": "r",
        "stream": "stdout",
    }
    metric = parse('sum(count_over_time({app="a"}[10s]))')
    assert isinstance(metric, MetricQuery)
    assert worker.metric(metric, 5 * NS, 5 * NS, NS)[0].points == [(5 * NS, 2.0)]
    assert worker.label_values("job", 0, 10 * NS) == ["j"]
    assert worker.seal() is not None
    assert worker.verify().ok
    with pytest.raises(LogQLError):  # the worker's error class crosses the process
        worker.select(LogQuery(()), 0, 1, limit=-1)
    worker.close()
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert b"s3cret-value-42" not in path.read_bytes()


def test_only_the_starter_can_call_it(worker: WorkerStore) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the authkey challenge fails
        Client(worker.address, family="AF_UNIX", authkey=b"guess")
    conn = Client(worker.address, family="AF_UNIX", authkey=worker._authkey)
    with conn:
        conn.send(("close", (), {}))  # not in the allowed methods
        assert conn.recv()[0] == "error"
    assert worker.last_seq() == 0  # still serving


def test_a_dead_worker_is_reported_and_its_process_reaped(worker: WorkerStore) -> None:
    assert worker._proc is not None
    worker._proc.kill()
    worker._proc.wait()
    assert not worker.alive()
    with pytest.raises(LogStoreError) as info:
        worker.last_seq()
    assert info.value.http_status == 503
    worker.close()
    worker.open()
    assert worker.last_seq() == 0


def test_a_deep_home_uses_an_abstract_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "store"
    store = WorkerStore(deep)
    store.open()
    try:
        assert store.address.startswith("\0socle-logstore-")
        store.push([Entry(1, "deep", {"app": "a"})])
        query = parse('{app="a"}')
        assert isinstance(query, LogQuery)
        assert [r.line for r in store.select(query, 0, 10)] == ["deep"]
    finally:
        store.close()


def test_staged_chunks_are_masked_repaired_and_cleaned_up(
    worker: WorkerStore, tmp_path: Path
) -> None:
    labels = InstanceLabels("a", "prod", "r")
    data = (
        b'{"t": 1.0, "s": "stdout", "m": "bad \xff byte s3cret-value-42"}\n'
        b'{"t": 2.0, "s": "stderr", "m": "caf\xc3\xa9 ok"}\n'
    )
    assert worker.ingest_chunks([Chunk("a-x-0", labels, data, 7, len(data))]) == 2
    assert worker.ingest_chunks([Chunk("a-x-0", labels, b"", 8, 0)]) == 0  # offset only
    assert worker.offsets() == {"a-x-0": (8, 0)}
    rows = worker.select(LogQuery(()), 0, 10 * NS, forward=True)
    assert [r.line for r in rows] == ["bad \ufffd byte ****", "café ok"]
    staging = tmp_path / "store" / "staging"
    assert staging.stat().st_mode & 0o777 == 0o700
    assert list(staging.iterdir()) == []  # read and removed
    # Only staging names are read: a caller cannot make the worker read another file.
    for name in ["../hot.duckdb", "/etc/passwd", "x.jsonl"]:
        with pytest.raises(LogStoreError, match="staging name"):
            worker._call("ingest_staged", [Staged("a-x-0", labels, name, 1, 9, 1)])
    assert worker.offsets() == {"a-x-0": (8, 0)}
