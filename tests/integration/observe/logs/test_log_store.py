"""The log store on real DuckDB and Parquet files: the right lines under concurrent writes
(pushers and a rotating shim log read at the same time), nothing lost or doubled across
restarts and crashes mid-seal, retention by age and size, secrets masked before storage."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from socle.observe.logs.chain import SEGMENTS, verify
from socle.observe.logs.logql import LogQLError, LogQuery, MetricQuery, parse
from socle.observe.logs.store import NS, Entry, InstanceLabels, LogStore
from socle.observe.logs.tail import instance_ids, tail_all
from socle.redact import Redactor
from socle.runtime.local.shim import Log

END = 2**62
LABELS = InstanceLabels("shimmed", "prod", "r1")


def q(text: str) -> LogQuery:
    query = parse(text)
    assert isinstance(query, LogQuery)
    return query


def everything(store: LogStore, text: str) -> list[str]:
    return [r.line for r in store.select(q(text), 0, END, limit=10**7, forward=True)]


@pytest.fixture
def store(tmp_path: Path) -> LogStore:
    s = LogStore(tmp_path / "store")
    s.open()
    yield s
    s.close()


def test_queries_return_the_right_lines_under_concurrent_writes(
    store: LogStore, tmp_path: Path
) -> None:
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    shim = Log(str(logs_dir / "shimmed-abc-0.log"), max_bytes=20_000, backups=50)
    pushers, per_pusher, shim_lines = 4, 300, 3000
    done = threading.Event()
    errors: list[BaseException] = []

    def pusher(k: int) -> None:
        try:
            for i in range(0, per_pusher, 10):
                store.push(
                    [
                        Entry(time.time_ns(), f"p{k} line {j}", {"app": f"pusher{k}", "env": "t"})
                        for j in range(i, i + 10)
                    ]
                )
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        for i in range(0, shim_lines, 50):
            shim.write_lines("stdout", [f"shim line {j}".encode() for j in range(i, i + 50)])
        done.set()

    def tailer() -> None:
        try:
            while not done.is_set():
                tail_all(store, logs_dir, lambda _: LABELS)
                # Queries run while the writes go on; each sees whole lines only.
                for line in everything(store, '{app="shimmed"}'):
                    assert line.startswith("shim line ")
            tail_all(store, logs_dir, lambda _: LABELS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(k,)) for k in range(pushers)]
    threads += [threading.Thread(target=writer), threading.Thread(target=tailer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(everything(store, '{app="shimmed"}'), key=lambda s: int(s.split()[-1])) == [
        f"shim line {j}" for j in range(shim_lines)
    ]
    for k in range(pushers):
        got = everything(store, f'{{app="pusher{k}"}}')
        assert sorted(got, key=lambda s: int(s.split()[-1])) == [
            f"p{k} line {j}" for j in range(per_pusher)
        ]
    assert len(everything(store, '{env=~"t|prod"} |= "line 1"')) == (
        1 + 10 + 100 + 1000
    ) + pushers * (1 + 10 + 100)


def test_offsets_survive_a_restart_and_a_rotation_while_down(tmp_path: Path) -> None:
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    shim = Log(str(logs_dir / "shimmed-abc-0.log"), max_bytes=2_000, backups=20)
    shim.write_lines("stdout", [f"before {i}".encode() for i in range(40)])
    first = LogStore(tmp_path / "store")
    first.open()
    tail_all(first, logs_dir, lambda _: LABELS)
    first.close()
    shim.write_lines("stderr", [f"while down {i}".encode() for i in range(200)])  # rotates
    second = LogStore(tmp_path / "store")
    second.open()
    try:
        tail_all(second, logs_dir, lambda _: LABELS)
        tail_all(second, logs_dir, lambda _: LABELS)
        lines = everything(second, '{instance="shimmed-abc-0"}')
        assert sorted(lines) == sorted(
            [f"before {i}" for i in range(40)] + [f"while down {i}" for i in range(200)]
        )
        assert everything(second, '{app="shimmed", stream="stderr"} |= "down 199"') == [
            "while down 199"
        ]
    finally:
        second.close()


def test_a_crash_at_any_point_of_a_seal_loses_and_doubles_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LogStore(root)
    store.open()
    store.push([Entry(i, f"line {i}", {"app": "a"}) for i in range(1, 6)])
    segment = store.seal()
    assert segment is not None
    # Crash after the chain line but before the hot rows were deleted: put them back.
    con = store._con
    assert con is not None
    con.execute(
        "INSERT INTO hot SELECT * FROM read_parquet(?)", [str(root / SEGMENTS / segment.file)]
    )
    store.push([Entry(10, "after", {"app": "a"})])
    store.close()
    # Crash after the Parquet file was written but before its chain line: an orphan.
    (root / SEGMENTS / "00000002.parquet").write_bytes(b"half-written segment")
    again = LogStore(root)
    again.open()
    try:
        assert everything(again, '{app="a"}') == [f"line {i}" for i in range(1, 6)] + ["after"]
        assert not (root / SEGMENTS / "00000002.parquet").exists()
        assert again.seal() is not None
        assert everything(again, '{app="a"}') == [f"line {i}" for i in range(1, 6)] + ["after"]
        assert verify(root).ok
    finally:
        again.close()


def test_retention_by_age_and_by_size(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = LogStore(
        tmp_path / "store",
        retention_seconds=3600,
        retention_bytes=10**9,
        clock=lambda: now[0],
    )
    store.open()
    try:
        for day in range(4):
            ts = int((now[0] - (3 - day) * 1800) * NS)
            store.push([Entry(ts + i, f"day {day} line {i}", {"app": "a"}) for i in range(100)])
            store.seal()
        assert store.retain() == [1]  # its newest line is 90 min old: past the hour
        assert len(everything(store, '{app="a"}')) == 300
        sizes = [s.bytes for s in store._chain.live()]
        store.retention_bytes = sum(sizes[1:]) + 1
        assert store.retain() == [2]
        assert {line.split()[1] for line in everything(store, '{app="a"}')} == {"2", "3"}
        report = verify(tmp_path / "store")
        assert report.ok and report.dropped == 2 and report.segments == 2
        # Nothing more to drop: retention is idempotent.
        assert store.retain() == []
    finally:
        store.close()


def test_secret_values_are_masked_before_they_are_stored(tmp_path: Path) -> None:
    redactor = Redactor()
    redactor.add("hunter2-s3cret")
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    Log(str(logs_dir / "shimmed-abc-0.log"), 10**6, 1).write_lines(
        "stdout", [b'password="hunter2-s3cret" ok']
    )
    store = LogStore(tmp_path / "store", redact=redactor)
    store.open()
    try:
        tail_all(store, logs_dir, lambda _: LABELS)
        store.push([Entry(time.time_ns(), "pushed hunter2-s3cret", {"app": "p"})])
        store.seal()
        store.push([Entry(time.time_ns(), "hot hunter2-s3cret", {"app": "p"})])
        assert everything(store, '{app=~"p|shimmed"}') == [
            'password="****" ok',
            "pushed ****",
            "hot ****",
        ]
        assert everything(store, '{app="p"} |= "hunter2"') == []
    finally:
        store.close()
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert b"hunter2-s3cret" not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("range_s", "step_s"), [(60, 60), (300, 60), (60, 300), (90, 60), (7, 3), (3600, 1)]
)
def test_counts_over_time_match_a_direct_count(store: LogStore, range_s: int, step_s: int) -> None:
    import random

    rnd = random.Random(range_s * 1000 + step_s)
    base = 1_700_000_000 * NS
    times = sorted(base + rnd.randrange(0, 1800 * NS) for _ in range(3000))
    store.push([Entry(t, f"x {i}", {"app": "a" if i % 3 else "b"}) for i, t in enumerate(times)])
    start, end = base + 600 * NS, base + 1800 * NS
    for text in (
        f'count_over_time({{app=~"a|b"}}[{range_s}s])',
        f'sum by (app) (rate({{app=~"a|b"}}[{range_s}s]))',
        f'sum(count_over_time({{app=~"a|b"}}[{range_s}s]))',
        f'max(bytes_over_time({{app=~"a|b"}}[{range_s}s]))',
    ):
        query = parse(text)
        assert isinstance(query, MetricQuery)
        got = {
            (tuple(sorted(s.labels.items())), t): v
            for s in store.metric(query, start, end, step_s * NS)
            for t, v in s.points
        }
        want: dict[tuple[tuple[tuple[str, str], ...], int], float] = {}
        for step in range(start, end + 1, step_s * NS):
            per_app: dict[str, float] = {}
            for i, t in enumerate(times):
                if step - range_s * NS < t <= step:
                    app = "a" if i % 3 else "b"
                    size = len(f"x {i}") if "bytes" in text else 1
                    per_app[app] = per_app.get(app, 0) + size
            if not per_app:
                continue
            if text.startswith("count_over_time"):
                for app, v in per_app.items():
                    want[((("app", app),), step)] = v
            elif text.startswith("sum by"):
                for app, v in per_app.items():
                    want[((("app", app),), step)] = v / range_s
            elif text.startswith("sum("):
                want[((), step)] = sum(per_app.values())
            else:
                want[((), step)] = max(per_app.values())
        assert got.keys() == want.keys(), text
        for key, value in want.items():
            assert got[key] == pytest.approx(value), (text, key)


def test_instances_are_found_mid_rotation_and_forgotten_once_gone(
    store: LogStore, tmp_path: Path
) -> None:
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    Log(str(logs_dir / "shimmed-abc-0.log"), 10**6, 2).write_lines("stdout", [b"one"])
    tail_all(store, logs_dir, lambda _: LABELS)
    # Between the shim's rename to .log.1 and its new .log, only the backup exists.
    (logs_dir / "shimmed-abc-0.log").rename(logs_dir / "shimmed-abc-0.log.1")
    assert instance_ids(logs_dir) == ["shimmed-abc-0"]
    tail_all(store, logs_dir, lambda _: LABELS)
    assert "shimmed-abc-0" in store.offsets()
    Log(str(logs_dir / "shimmed-abc-0.log"), 10**6, 2).write_lines("stdout", [b"two"])
    tail_all(store, logs_dir, lambda _: LABELS)
    assert everything(store, '{app="shimmed"}') == ["one", "two"]
    for path in logs_dir.iterdir():
        path.unlink()
    tail_all(store, logs_dir, lambda _: LABELS)
    assert store.offsets() == {}


def test_a_query_past_its_time_limit_is_stopped_with_a_reason(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store", query_timeout=0.2)
    store.open()
    try:
        # Stands for a query over years of logs: minutes of work on any machine.
        with pytest.raises(LogQLError) as info:
            store._run("SELECT count(*) FROM range(1000000000000) t(x) WHERE x % 7 = 3", [])
        assert "was stopped" in info.value.message
        assert info.value.http_status == 400
        # The store still answers afterwards.
        store.push([Entry(1, "still here", {"app": "a"})])
        assert everything(store, '{app="a"}') == ["still here"]
    finally:
        store.close()


def test_compaction_merges_small_segments_and_keeps_the_chain_verifiable(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    store = LogStore(root)
    store.open()
    for k in range(10):
        store.push(
            [Entry(k * 100 + i, f"seg {k} line {i}", {"app": f"a{k % 2}"}) for i in range(50)]
        )
        store.seal()
    before = everything(store, '{app=~"a0|a1"}')
    assert store.compact(min_run=11) is None  # not enough small segments yet
    merged = store.compact(min_run=8)
    assert merged is not None and merged.rows == 500 and merged.apps == ["a0", "a1"]
    assert [s.n for s in store._chain.live()] == [11]
    assert everything(store, '{app=~"a0|a1"}') == before
    assert everything(store, '{app="a1"} |= "seg 9 line 49"') == ["seg 9 line 49"]
    assert sorted(p.name for p in (root / SEGMENTS).iterdir()) == ["00000011.parquet"]
    report = verify(root)
    assert report.ok and report.segments == 1 and report.dropped == 10
    store.close()
    # A crash between the compaction's chain line and the unlinks leaves an old file.
    (root / SEGMENTS / "00000003.parquet").write_bytes(b"left over")
    again = LogStore(root)
    again.open()
    try:
        assert not (root / SEGMENTS / "00000003.parquet").exists()
        assert everything(again, '{app=~"a0|a1"}') == before
    finally:
        again.close()
    data = bytearray((root / SEGMENTS / "00000011.parquet").read_bytes())
    data[100] ^= 1
    (root / SEGMENTS / "00000011.parquet").write_bytes(bytes(data))
    assert "was modified" in verify(root).problems[0]


def test_a_line_cannot_pass_for_another_stream_through_parsed_fields(store: LogStore) -> None:
    """Loki's rule: a parsed field named like a stream label is ``NAME_extracted``; the
    stream's own label keeps its value (an app cannot forge another app's lines)."""
    now = time.time_ns()
    store.push(
        [
            Entry(now, '{"app": "billing", "msg": "forged"}', {"app": "intruder", "env": "prod"}),
            Entry(now + 1, "app=billing msg=forged-logfmt", {"app": "intruder", "env": "prod"}),
            Entry(now + 2, '{"msg": "real"}', {"app": "billing", "env": "prod"}),
            Entry(now + 3, '{"team": "ops"}', {"app": "pusher", "env": "prod", "team": "dev"}),
        ]
    )
    assert everything(store, '{env="prod"} | json | app="billing"') == ['{"msg": "real"}']
    assert everything(store, '{env="prod"} | logfmt | app="billing"') == ['{"msg": "real"}']
    assert everything(store, '{env="prod"} | json | app_extracted="billing"') == [
        '{"app": "billing", "msg": "forged"}'
    ]
    # A pushed (non-column) stream label wins over the line's field of the same name too.
    assert everything(store, '{env="prod"} | json | team="dev"') == ['{"team": "ops"}']
    assert everything(store, '{env="prod"} | json | team="ops"') == []
    # Fields that no stream label names are still found in the text.
    assert everything(store, '{env="prod"} | json | msg="forged"') == [
        '{"app": "billing", "msg": "forged"}'
    ]


def test_secrets_in_an_apps_own_json_lines_are_masked_too(tmp_path: Path) -> None:
    """An app that logs JSON escapes a secret's quotes and backslashes, then the shim's
    JSON line escapes them again: every spelling must still be masked."""
    secret = 'pa"ss\\wörd-42'
    redactor = Redactor()
    redactor.add(secret)
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    app_line = json.dumps({"event": "login", "password": secret})
    ascii_line = json.dumps({"password": secret}, ensure_ascii=False)
    Log(str(logs_dir / "shimmed-abc-0.log"), 10**6, 1).write_lines(
        "stdout", [app_line.encode(), ascii_line.encode()]
    )
    store = LogStore(tmp_path / "store", redact=redactor)
    store.open()
    try:
        tail_all(store, logs_dir, lambda _: LABELS)
        lines = everything(store, '{app="shimmed"}')
        assert len(lines) == 2
        for line in lines:
            assert json.loads(line)["password"] == "****", line
    finally:
        store.close()


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(", "missing )"),
        ("(?=x)", "invalid perl operator"),
        ("(a)\\1", "invalid escape"),
        ("a{1001}", "invalid repetition size"),
    ],
)
def test_regular_expressions_rejected_by_re2_are_named(
    store: LogStore, pattern: str, reason: str
) -> None:
    with pytest.raises(LogQLError) as refused:
        store.check_regexes(["ok.*", pattern])
    assert refused.value.message.startswith(f"query: bad regular expression {pattern!r}")
    assert reason in refused.value.message


def test_re2_classes_python_refuses_work(store: LogStore) -> None:
    """``\\p{Greek}`` and ``[[:digit:]]`` are RE2 (and Loki's); the parse lets them through,
    the store accepts and applies them."""
    now = time.time_ns()
    store.push([Entry(now, "αβγ", {"app": "re2"}), Entry(now + 1, "abc 42", {"app": "re2"})])
    store.check_regexes(["\\p{Greek}+", "[[:digit:]]+"])
    assert everything(store, '{app="re2"} |~ "^\\\\p{Greek}+$"') == ["αβγ"]
    assert everything(store, '{app="re2"} |~ "[[:digit:]]+"') == ["abc 42"]


def test_label_lookups_read_a_bounded_number_of_label_sets(store: LogStore) -> None:
    """Every distinct label set is read back for ``labels``: a client pushing many distinct
    streams gets a bounded answer, not an unbounded read."""
    now = time.time_ns()
    store.push([Entry(now + i, "x", {"app": f"many{i}", "k": str(i)}) for i in range(8)])
    store.max_distinct = 3
    assert len(store.label_values("app", 0, END)) == 3
    assert len(store.label_values("k", 0, END)) == 3
    store.max_distinct = 100
    assert len(store.label_values("app", 0, END)) == 8
