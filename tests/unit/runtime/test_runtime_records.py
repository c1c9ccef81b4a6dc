"""Instance records: round trip, atomic private files, and no secret values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from socle.errors import RuntimeDriverError
from socle.model.app import HealthSpec
from socle.runtime.driver import InstanceId, InstanceSpec, Mount, ReleaseId
from socle.runtime.local.procs import ProcRef
from socle.runtime.local.records import (
    InstanceRecord,
    RecordStore,
    check_id,
    spec_from_json,
    spec_to_json,
)

SECRET = "very-secret-value-123"


def _spec() -> InstanceSpec:
    return InstanceSpec(
        id=InstanceId("web-abc-0"),
        app="web",
        release=ReleaseId("abc"),
        ordinal=0,
        command=[".venv/bin/python", "-m", "web"],
        workdir=Path("/srv/releases/abc/app"),
        env={"MODE": "prod"},
        secret_env={"DB_PASSWORD": SECRET},
        ports=["http", "admin"],
        health=HealthSpec.model_validate(
            {"http": {"port": "http", "path": "/healthz"}, "interval": "500ms", "startGrace": 2}
        ),
        restart="on-failure",
        stop_grace=3.0,
        memory=128 * 2**20,
        cpu=0.5,
        release_root=Path("/srv/releases/abc"),
        mounts=[Mount(Path("/srv/volumes/data"), "/data"), Mount(Path("/srv/cfg"), "/cfg", True)],
        environment="prod",
        labels={"team": "payments"},
    )


def test_spec_round_trip_drops_only_secret_values() -> None:
    spec = _spec()
    data = spec_to_json(spec)
    assert SECRET not in json.dumps(data)
    assert data["secret_keys"] == ["DB_PASSWORD"]
    back = spec_from_json(json.loads(json.dumps(data)))
    assert back.secret_env == {}
    assert back == InstanceSpec(**{**spec.__dict__, "secret_env": {}})


def test_record_round_trip_and_file_mode(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.ensure()
    record = InstanceRecord(
        spec=spec_to_json(_spec()),
        ports={"http": 41000, "admin": 41001},
        isolation="namespaces(pid,mount,ipc,uts)",
        sandbox=True,
        cgroups=["/sys/fs/cgroup/memory/socle/web-abc-0"],
        shim=ProcRef(100, 5555),
        child=ProcRef(101, 5556),
        app=ProcRef(103, 5560),
        restarts=4,
        streak=2,
        started_at=1700000000.5,
        last_exit_code=137,
        uid=200_017,
        scratch="/srv/run/scratch/web-abc-0",
    )
    store.write(record)
    path = store.record_path("web-abc-0")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "instances").stat().st_mode & 0o777 == 0o700
    assert SECRET not in path.read_text()
    assert list((tmp_path / "instances").iterdir()) == [path]  # no temp file left
    (loaded,) = store.load_all()
    assert loaded == record
    store.delete("web-abc-0")
    assert store.load_all() == []


def test_broken_records_are_skipped(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.ensure()
    (store.dir / "bad.json").write_text("{not json")
    (store.dir / "old.json").write_text(json.dumps({"version": 99}))
    assert store.load_all() == []


def test_exit_status_file(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.ensure()
    assert store.read_status("x") is None
    store.status_path("x").write_text('{"code": 143, "signal": 15, "t": 1.5, "error": null}')
    status = store.read_status("x")
    assert status is not None and (status.code, status.signal, status.error) == (143, 15, None)
    store.clear_status("x")
    assert store.read_status("x") is None


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 200, "a b", "-x"])
def test_ids_that_could_escape_are_refused(bad: str) -> None:
    with pytest.raises(RuntimeDriverError):
        check_id(bad)


def test_proc_ref_detects_pid_reuse() -> None:
    import os

    me = ProcRef.of(os.getpid())
    assert me is not None and me.alive()
    assert not ProcRef(me.pid, me.start + 1).alive()
    assert ProcRef.from_json(me.to_json()) == me
    assert ProcRef.from_json("nope") is None


def test_an_id_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(RuntimeDriverError, match="invalid instance id"):
        check_id("web-0\n")
