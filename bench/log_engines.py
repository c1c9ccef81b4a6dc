"""Which embedded engine stores Socle's logs: DuckDB, chdb (embedded ClickHouse) or tantivy.

The same generated JSON-lines logs (labels app/env/instance/stream and a text line, the shape
Socle stores) go into each engine the way that engine ingests fastest from Python without
extra runtime dependencies, then one label + substring query runs on each (``app = 'api'``
and the line contains a rare word), as ``socle logs --query '{app="api"} |= "needle"'`` does.
``grep -c`` over the same raw bytes is the floor.

chdb and tantivy are not Socle dependencies: install them apart for this measurement only,
e.g. ``pip install --target /tmp/engines chdb tantivy`` and run with
``ENGINES_PATH=/tmp/engines``. An engine that is not importable is reported as skipped.

Usage: python bench/log_engines.py [MEGABYTES]   (default 200). Prints JSON.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if os.environ.get("ENGINES_PATH"):
    sys.path.append(os.environ["ENGINES_PATH"])

APPS = ["api", "web", "worker", "billing", "search", "auth", "mail", "cron"]
WORDS = [
    "GET",
    "POST",
    "PUT",
    "user",
    "order",
    "cache",
    "miss",
    "hit",
    "served",
    "request",
    "took",
    "ms",
    "status",
    "ok",
]
NEEDLE = "deadbeef-needle"


def generate(path: Path, megabytes: int) -> tuple[int, int]:
    """JSON lines of ~``megabytes``; returns (bytes, lines). One line in 10,000 (always of app "api") has NEEDLE."""
    rnd = random.Random(7)
    target = megabytes * 1_000_000
    size = lines = 0
    t0 = 1_780_000_000.0
    with open(path, "w") as out:
        while size < target:
            chunk = []
            for _ in range(10_000):
                app = APPS[lines % len(APPS)]
                words = " ".join(rnd.choice(WORDS) for _ in range(12))
                if lines % 10_000 == 4_320:
                    words += " " + NEEDLE
                record = {
                    "t": t0 + lines * 0.001,
                    "app": app,
                    "env": "prod" if lines % 3 else "staging",
                    "instance": f"{app}-{lines % 4}",
                    "stream": "stdout" if lines % 5 else "stderr",
                    "line": f"level=info request_id={lines:x} {words}",
                }
                chunk.append(json.dumps(record))
                lines += 1
            text = "\n".join(chunk) + "\n"
            out.write(text)
            size += len(text)
    return size, lines


def _grep(path: Path) -> dict[str, Any]:
    start = time.perf_counter()
    out = subprocess.run(["grep", "-c", NEEDLE, str(path)], capture_output=True, text=True)
    return {"query_s": round(time.perf_counter() - start, 3), "count": int(out.stdout.strip())}


def _duckdb(path: Path, work: Path, size: int) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(work / "logs.duckdb"))
    start = time.perf_counter()
    con.execute(
        "CREATE TABLE logs AS SELECT * FROM read_json(?, format='newline_delimited', "
        "columns={'t':'DOUBLE','app':'VARCHAR','env':'VARCHAR','instance':'VARCHAR',"
        "'stream':'VARCHAR','line':'VARCHAR'})",
        [str(path)],
    )
    con.execute("CHECKPOINT")
    ingest = time.perf_counter() - start
    start = time.perf_counter()
    row = con.execute(
        "SELECT count(*) FROM logs WHERE app = 'api' AND contains(line, ?)", [NEEDLE]
    ).fetchone()
    query = time.perf_counter() - start
    con.close()
    disk = (work / "logs.duckdb").stat().st_size
    return _figures(size, ingest, query, row[0] if row else -1, disk)


def _chdb(path: Path, work: Path, size: int) -> dict[str, Any]:
    from chdb import session

    sess = session.Session(str(work / "chdb"))
    sess.query(
        "CREATE TABLE logs (t Float64, app LowCardinality(String), env LowCardinality(String), "
        "instance LowCardinality(String), stream LowCardinality(String), line String) "
        "ENGINE = MergeTree ORDER BY (app, t)"
    )
    start = time.perf_counter()
    sess.query(f"INSERT INTO logs SELECT * FROM file('{path}', JSONEachRow)")
    ingest = time.perf_counter() - start
    start = time.perf_counter()
    out = sess.query(
        f"SELECT count() FROM logs WHERE app = 'api' AND position(line, '{NEEDLE}') > 0", "CSV"
    )
    query = time.perf_counter() - start
    count = int(str(out).strip())
    sess.close()
    disk = sum(p.stat().st_size for p in (work / "chdb").rglob("*") if p.is_file())
    return _figures(size, ingest, query, count, disk)


def _tantivy(path: Path, work: Path, size: int) -> dict[str, Any]:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_float_field("t", stored=True)
    for name in ("app", "env", "instance", "stream"):
        builder.add_text_field(name, stored=True, tokenizer_name="raw")
    builder.add_text_field("line", stored=True)
    schema = builder.build()
    (work / "tantivy").mkdir()
    index = tantivy.Index(schema, path=str(work / "tantivy"))
    writer = index.writer(heap_size=256_000_000, num_threads=2)
    start = time.perf_counter()
    with open(path) as handle:
        for raw in handle:
            record = json.loads(raw)
            writer.add_document(tantivy.Document(**record))
    writer.commit()
    writer.wait_merging_threads()
    ingest = time.perf_counter() - start
    index.reload()
    searcher = index.searcher()
    start = time.perf_counter()
    query = index.parse_query(f'app:api AND line:"{NEEDLE}"', ["line"])
    count = searcher.search(query, 1).count
    elapsed = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in (work / "tantivy").rglob("*") if p.is_file())
    return _figures(size, ingest, elapsed, count, disk)


def _figures(size: int, ingest: float, query: float, count: int, disk: int) -> dict[str, Any]:
    return {
        "ingest_s": round(ingest, 3),
        "ingest_mb_s": round(size / 1e6 / ingest, 1),
        "query_s": round(query, 3),
        "count": count,
        "disk_mb": round(disk / 1e6, 1),
    }


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="socle-log-engines-") as tmp:
        data = Path(tmp) / "logs.jsonl"
        size, lines = generate(data, megabytes)
        results["data"] = {"mb": round(size / 1e6, 1), "lines": lines}
        results["grep -c (floor)"] = _grep(data)
        for name, run in (("duckdb", _duckdb), ("chdb", _chdb), ("tantivy", _tantivy)):
            work = Path(tmp) / name
            work.mkdir()
            try:
                results[name] = run(data, work, size)
            except ImportError as exc:
                results[name] = {"skipped": f"not importable: {exc}"}
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
