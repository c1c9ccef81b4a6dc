"""Log store: ingest MB/s and a label + substring query, with ``grep -c`` as the floor.

Generates shim log files (the exact JSON-lines format the runtime's shims write) for 8
apps x 2 instances, ``MEGABYTES`` in all, then drives the real store code path:

- ingest: :func:`socle.observe.logs.tail.tail_all` reads every file from its offset,
  masks it with a redactor holding one secret and hands it to the store's worker process
  (:class:`WorkerStore`, as the control plane does), which inserts into DuckDB (MB/s of raw
  shim bytes); then the seal into a chained Parquet segment, timed apart;
- query: ``{app="api"} |= "NEEDLE"`` through :meth:`LogStore.select` on the sealed
  segments (and the same on the hot table before the seal), and
  ``sum(count_over_time({app="api"} |= "NEEDLE"[24h]))``;
- floor: ``grep -c NEEDLE`` over the same raw files in the same run.

Targets (issue 11): ingest >= 50 MB/s, query <= 1 s over 1 GB.

Usage: python bench/logs.py [MEGABYTES]   (default 1000). Prints JSON.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from socle.observe.logs.logql import LogQuery, MetricQuery, parse  # noqa: E402
from socle.observe.logs.model import NS, InstanceLabels  # noqa: E402
from socle.observe.logs.tail import tail_all  # noqa: E402
from socle.observe.logs.worker import WorkerStore  # noqa: E402
from socle.redact import Redactor  # noqa: E402

APPS = ["api", "web", "worker", "billing", "search", "auth", "mail", "cron"]
WORDS = ["GET", "POST", "user", "order", "cache", "miss", "hit", "served", "took", "ms", "ok"]
NEEDLE = "deadbeef-needle"


def generate(logs_dir: Path, megabytes: int) -> tuple[int, int]:
    """Shim files for 16 instances: one ~2 MB block of distinct lines per instance, written
    again and again until ``megabytes`` (so that generating 1 GB takes seconds, not
    minutes; repeated lines cost the store the same as new ones). In app api, 2 lines in
    10,000 hold NEEDLE."""
    rnd = random.Random(11)
    ids = [f"{app}-0123456789-{ordinal}" for app in APPS for ordinal in (0, 1)]
    t0 = time.time() - 3600
    blocks: dict[str, bytes] = {}
    per_block = 0
    for iid in ids:
        chunk = []
        for n in range(16_000):
            words = " ".join(rnd.choice(WORDS) for _ in range(10))
            text = f"level=info req={n:x} {words}"
            if iid.startswith("api-") and n % 10_000 < 2:
                text += " " + NEEDLE
            chunk.append(f'{{"t": {t0 + n * 1e-3:.6f}, "s": "stdout", "m": "{text}"}}\n')
        blocks[iid] = "".join(chunk).encode()
        per_block = len(chunk)
    size = lines = 0
    target = megabytes * 1_000_000
    handles = {iid: open(logs_dir / f"{iid}.log", "wb") for iid in ids}  # noqa: SIM115
    try:
        while size < target:
            for iid, handle in handles.items():
                handle.write(blocks[iid])
                size += len(blocks[iid])
                lines += per_block
    finally:
        for handle in handles.values():
            handle.close()
    return size, lines


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="socle-bench-logs-") as tmp:
        logs_dir = Path(tmp) / "logs"
        logs_dir.mkdir()
        start = time.perf_counter()
        size, lines = generate(logs_dir, megabytes)
        out["data"] = {
            "mb": round(size / 1e6, 1),
            "lines": lines,
            "generate_s": round(time.perf_counter() - start, 1),
        }
        files = sorted(str(p) for p in logs_dir.glob("*.log"))
        start = time.perf_counter()
        grep = subprocess.run(["grep", "-c", NEEDLE, *files], capture_output=True, text=True)
        grep_s = time.perf_counter() - start
        grep_count = sum(int(line.rsplit(":", 1)[1]) for line in grep.stdout.splitlines())
        out["grep -c (floor)"] = {"s": round(grep_s, 3), "count": grep_count}

        out["duckdb_alone (ceiling)"] = _ceiling(files, size, Path(tmp) / "ceiling.duckdb")
        redactor = Redactor()
        redactor.add("not-in-these-logs-s3cret")
        # The control plane's path: masked here, stored by the worker process.
        store = WorkerStore(Path(tmp) / "store", redact=redactor, segment_rows=10**12)
        store.open()
        try:
            assert store._proc is not None
            worker = store._proc.pid
            start, cpu0, wcpu0 = time.perf_counter(), time.process_time(), _cpu_of(worker)
            stored = tail_all(
                store, logs_dir, lambda iid: InstanceLabels(iid.split("-")[0], "prod", "r1")
            )
            ingest = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            wcpu = _cpu_of(worker) - wcpu0
            out["ingest"] = {
                "lines": stored,
                "s": round(ingest, 2),
                "mb_s": round(size / 1e6 / ingest, 1),
                "lines_s": round(stored / ingest),
                "cpu_s_control_plane": round(cpu, 2),
                "cpu_s_worker": round(wcpu, 2),
                "mb_per_cpu_s": round(size / 1e6 / (cpu + wcpu), 1),
            }
            query = parse(f'{{app="api"}} |= "{NEEDLE}"')
            assert isinstance(query, LogQuery)
            out["query_hot"] = _query(store, query)
            start = time.perf_counter()
            segment = store.seal()
            assert segment is not None
            out["seal"] = {
                "s": round(time.perf_counter() - start, 2),
                "segment_mb": round(segment.bytes / 1e6, 1),
            }
            out["query_sealed"] = _query(store, query)
            metric = parse(f'sum(count_over_time({{app="api"}} |= "{NEEDLE}"[24h]))')
            assert isinstance(metric, MetricQuery)
            now = time.time_ns()
            start = time.perf_counter()
            series = store.metric(metric, now, now, NS)
            out["count_over_time_sealed"] = {
                "s": round(time.perf_counter() - start, 3),
                "count": int(series[0].points[-1][1]) if series else 0,
            }
        finally:
            store.close()
    out["targets"] = {"ingest_mb_s": ">= 50", "query_s": "<= 1"}
    # Wall figures depend on what else runs: CPU seconds (both processes) do much less.
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ceiling(files: list[str], size: int, path: Path) -> dict[str, Any]:
    """DuckDB alone loading the same files into a table (no masking, labels, offsets):
    what the engine does on this machine at this moment, to compare the store with."""
    import duckdb

    con = duckdb.connect(str(path))
    start, cpu0 = time.perf_counter(), time.process_time()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited', "
        "columns={'t':'DOUBLE','s':'VARCHAR','m':'VARCHAR'})",
        [files],
    )
    con.execute("CHECKPOINT")
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    con.close()
    path.unlink()
    return {
        "s": round(elapsed, 2),
        "mb_s": round(size / 1e6 / elapsed, 1),
        "mb_per_cpu_s": round(size / 1e6 / cpu, 1),
    }


def _query(store: WorkerStore, query: LogQuery, rounds: int = 20) -> dict[str, Any]:
    """The query ``rounds`` times through the worker (as the API runs it): first, best,
    p50 and p99 (with 20 rounds, p99 is the slowest)."""
    runs = []
    count = 0
    for _ in range(rounds):
        start = time.perf_counter()
        count = len(store.select(query, 0, 2**62, limit=100_000))
        runs.append(time.perf_counter() - start)
    ordered = sorted(runs)
    return {
        "s_first": round(runs[0], 3),
        "s_best": round(ordered[0], 3),
        "s_p50": round(ordered[len(ordered) // 2], 3),
        "s_p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
        "count": count,
    }


if __name__ == "__main__":
    main()
