"""KV v2 engine: versions, check-and-set, soft delete/undelete/destroy, metadata, listing."""

from __future__ import annotations

import re

import pytest

from socle.secrets.engines.kv import kv_factory
from socle.secrets.engines.kv_v2 import KVv2Backend
from tests.unit.secrets.engines.enginekit import FakeClock, call, exists, fails, mount
from tests.unit.secrets.engines.memstorage import MemStorage

RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kv(clock: FakeClock) -> KVv2Backend:
    return KVv2Backend(MemStorage(), mount(options={"version": "2"}), clock=clock)


async def write(kv: KVv2Backend, path: str, data: dict[str, object], cas: int | None = None) -> int:
    body: dict[str, object] = {"data": data}
    if cas is not None:
        body["options"] = {"cas": cas}
    response = await call(kv, "create", f"data/{path}", body)
    assert response.data is not None
    return int(response.data["version"])


async def test_factory_picks_version_from_mount_options() -> None:
    assert isinstance(await kv_factory(MemStorage(), mount(options={"version": "2"})), KVv2Backend)
    assert not isinstance(await kv_factory(MemStorage(), mount()), KVv2Backend)
    with pytest.raises(Exception, match="invalid kv version"):
        await kv_factory(MemStorage(), mount(options={"version": "3"}))


async def test_write_then_read_versions(kv: KVv2Backend, clock: FakeClock) -> None:
    response = await call(kv, "create", "data/app/db", {"data": {"password": "one"}})
    assert response.data is not None
    assert response.data["version"] == 1
    assert response.data["destroyed"] is False
    assert response.data["deletion_time"] == ""
    assert response.data["custom_metadata"] is None
    assert response.data["created_time"] == "2023-11-14T22:13:20.123456789Z"
    clock.advance(1)
    assert await write(kv, "app/db", {"password": "two"}) == 2

    latest = await call(kv, "read", "data/app/db")
    assert latest.data is not None
    assert latest.data["data"] == {"password": "two"}
    assert latest.data["metadata"]["version"] == 2
    assert RFC3339_NANO.match(latest.data["metadata"]["created_time"])

    first = await call(kv, "read", "data/app/db", query={"version": "1"})
    assert first.data is not None and first.data["data"] == {"password": "one"}


async def test_read_missing_is_bare_404(kv: KVv2Backend) -> None:
    error = await fails(kv, "read", "data/nope")
    assert error.status == 404 and error.errors == []
    await write(kv, "present", {"a": 1})
    assert (await fails(kv, "read", "data/present", query={"version": "7"})).status == 404


async def test_cas(kv: KVv2Backend) -> None:
    assert await write(kv, "k", {"v": 1}, cas=0) == 1
    error = await fails(kv, "update", "data/k", {"data": {"v": 2}, "options": {"cas": 0}})
    assert error.status == 400
    assert error.errors == ["check-and-set parameter did not match the current version"]
    assert await write(kv, "k", {"v": 2}, cas=1) == 2
    bad = await fails(kv, "update", "data/k", {"data": {"v": 3}, "options": {"cas": "x"}})
    assert bad.errors == ["error parsing check-and-set parameter"]


async def test_cas_required_by_config_and_by_key(kv: KVv2Backend) -> None:
    await call(kv, "update", "config", {"cas_required": True})
    error = await fails(kv, "create", "data/k", {"data": {"v": 1}})
    assert error.status == 400
    assert error.errors == ["check-and-set parameter required for this call"]
    assert await write(kv, "k", {"v": 1}, cas=0) == 1
    await call(kv, "update", "config", {"cas_required": False})
    await call(kv, "update", "metadata/k", {"cas_required": True})
    assert (await fails(kv, "update", "data/k", {"data": {"v": 2}})).status == 400
    assert await write(kv, "other", {"v": 1}) == 1


async def test_cas_required_false_on_key_warns_when_config_mandates(kv: KVv2Backend) -> None:
    await call(kv, "update", "config", {"cas_required": True})
    response = await call(kv, "update", "metadata/k", {"cas_required": False})
    assert response.status == 200
    assert response.warnings and "mandated by backend config" in response.warnings[0]


async def test_max_versions_trims_oldest(kv: KVv2Backend) -> None:
    await call(kv, "update", "metadata/k", {"max_versions": 2})
    for value in range(1, 5):
        await write(kv, "k", {"v": value})
    meta = await call(kv, "read", "metadata/k")
    assert meta.data is not None
    assert sorted(meta.data["versions"]) == ["3", "4"]
    assert meta.data["current_version"] == 4
    assert meta.data["oldest_version"] == 3
    assert (await fails(kv, "read", "data/k", query={"version": "2"})).status == 404
    # The trimmed data is gone from storage, not just hidden.
    storage = kv._storage
    assert isinstance(storage, MemStorage)
    assert len([k for k in storage.items if k.startswith("ver/")]) == 2


async def test_engine_max_versions_applies_when_key_has_none(kv: KVv2Backend) -> None:
    await call(kv, "update", "config", {"max_versions": "3"})
    for value in range(5):
        await write(kv, "k", {"v": value})
    meta = await call(kv, "read", "metadata/k")
    assert meta.data is not None and sorted(meta.data["versions"]) == ["3", "4", "5"]
    config = await call(kv, "read", "config")
    assert config.data == {"max_versions": 3, "cas_required": False, "delete_version_after": "0s"}


async def test_soft_delete_latest_undelete_and_404_shape(kv: KVv2Backend) -> None:
    await write(kv, "k", {"v": 1})
    await write(kv, "k", {"v": 2})
    assert (await call(kv, "delete", "data/k")).status is None
    gone = await call(kv, "read", "data/k")
    assert gone.status == 404
    assert gone.data is not None and gone.data["data"] is None
    assert gone.data["metadata"]["version"] == 2
    assert gone.data["metadata"]["deletion_time"] != ""
    # Older versions stay readable.
    older = await call(kv, "read", "data/k", query={"version": "1"})
    assert older.data is not None and older.data["data"] == {"v": 1}

    await call(kv, "update", "undelete/k", {"versions": [2]})
    back = await call(kv, "read", "data/k")
    assert back.status is None and back.data is not None and back.data["data"] == {"v": 2}


async def test_delete_specific_versions_and_destroy(kv: KVv2Backend) -> None:
    for value in range(3):
        await write(kv, "k", {"v": value})
    await call(kv, "update", "delete/k", {"versions": "1,2"})
    meta = await call(kv, "read", "metadata/k")
    assert meta.data is not None
    assert meta.data["versions"]["1"]["deletion_time"] != ""
    assert meta.data["versions"]["3"]["deletion_time"] == ""

    await call(kv, "update", "destroy/k", {"versions": [1]})
    destroyed = await call(kv, "read", "data/k", query={"version": "1"})
    assert destroyed.status == 404
    assert destroyed.data is not None and destroyed.data["metadata"]["destroyed"] is True
    # A destroyed version cannot be undeleted.
    await call(kv, "update", "undelete/k", {"versions": [1, 2]})
    still = await call(kv, "read", "data/k", query={"version": "1"})
    assert still.status == 404
    assert (await call(kv, "read", "data/k", query={"version": "2"})).status is None


@pytest.mark.parametrize("verb", ["delete", "undelete", "destroy"])
async def test_versions_are_required(kv: KVv2Backend, verb: str) -> None:
    error = await fails(kv, "update", f"{verb}/k", {})
    assert error.status == 400
    assert error.errors[0].lower() == "no version number provided"


async def test_delete_version_after(kv: KVv2Backend, clock: FakeClock) -> None:
    await call(kv, "update", "metadata/k", {"delete_version_after": "1h"})
    await write(kv, "k", {"v": 1})
    assert (await call(kv, "read", "data/k")).status is None
    clock.advance(3601)
    assert (await call(kv, "read", "data/k")).status == 404
    meta = await call(kv, "read", "metadata/k")
    assert meta.data is not None and meta.data["delete_version_after"] == "1h0m0s"


async def test_metadata_read_update_and_delete_all(kv: KVv2Backend) -> None:
    await write(kv, "k", {"v": 1})
    response = await call(
        kv,
        "update",
        "metadata/k",
        {"max_versions": 5, "custom_metadata": {"owner": "ops", "tier": 1}},
    )
    assert response.status is None
    meta = await call(kv, "read", "metadata/k")
    assert meta.data is not None
    assert meta.data["custom_metadata"] == {"owner": "ops", "tier": "1"}
    assert meta.data["max_versions"] == 5
    assert meta.data["cas_required"] is False
    assert RFC3339_NANO.match(meta.data["updated_time"])
    data = await call(kv, "read", "data/k")
    assert data.data is not None and data.data["metadata"]["custom_metadata"]["owner"] == "ops"

    await call(kv, "patch", "metadata/k", {"custom_metadata": {"tier": None, "new": "x"}})
    meta = await call(kv, "read", "metadata/k")
    assert meta.data is not None and meta.data["custom_metadata"] == {"owner": "ops", "new": "x"}

    await call(kv, "delete", "metadata/k")
    assert (await fails(kv, "read", "metadata/k")).status == 404
    assert (await fails(kv, "read", "data/k")).status == 404
    assert kv._storage.items == {}  # type: ignore[attr-defined]


async def test_custom_metadata_limits(kv: KVv2Backend) -> None:
    too_many = {f"k{i}": "v" for i in range(65)}
    error = await fails(kv, "update", "metadata/k", {"custom_metadata": too_many})
    assert error.status == 400 and "at most 64 keys" in error.errors[0]
    error = await fails(kv, "update", "metadata/k", {"custom_metadata": {"a": "x" * 513}})
    assert "length of value" in error.errors[0]
    error = await fails(kv, "update", "metadata/k", {"custom_metadata": {"a": "bell\x07"}})
    assert "unprintable" in error.errors[0]


async def test_list_folders(kv: KVv2Backend) -> None:
    for path in ["app/db", "app/api/key", "top", "app"]:
        await write(kv, path, {"x": 1})
    root = await call(kv, "list", "metadata/")
    assert root.data == {"keys": ["app", "app/", "top"]}
    app = await call(kv, "list", "metadata/app")
    assert app.data == {"keys": ["api/", "db"]}
    assert (await fails(kv, "list", "metadata/missing/")).status == 404


async def test_patch_merges_and_checks_cas(kv: KVv2Backend) -> None:
    await write(kv, "k", {"a": 1, "nested": {"x": 1, "y": 2}})
    response = await call(kv, "patch", "data/k", {"data": {"b": 2, "nested": {"y": None}}})
    assert response.data is not None and response.data["version"] == 2
    read = await call(kv, "read", "data/k")
    assert read.data is not None
    assert read.data["data"] == {"a": 1, "b": 2, "nested": {"x": 1}}
    assert (await fails(kv, "patch", "data/nope", {"data": {"a": 1}})).status == 404
    error = await fails(kv, "patch", "data/k", {"data": {"a": 1}, "options": {"cas": 1}})
    assert error.status == 400


async def test_subkeys(kv: KVv2Backend) -> None:
    await write(kv, "k", {"a": 1, "b": {"c": {"d": 1}}, "e": {}})
    response = await call(kv, "read", "subkeys/k")
    assert response.data is not None
    assert response.data["subkeys"] == {"a": None, "b": {"c": {"d": None}}, "e": {}}
    shallow = await call(kv, "read", "subkeys/k", query={"depth": "1"})
    assert shallow.data is not None and shallow.data["subkeys"] == {"a": None, "b": None, "e": None}


async def test_existence_drives_create_vs_update(kv: KVv2Backend) -> None:
    assert not await exists(kv, "data/k")
    assert not await exists(kv, "metadata/k")
    await write(kv, "k", {"v": 1})
    assert await exists(kv, "data/k")
    assert await exists(kv, "metadata/k")
    assert await exists(kv, "config")


@pytest.mark.parametrize(
    ("operation", "path", "status"),
    [
        ("read", "k", 404),
        ("read", "data/", 404),
        ("create", "unknown/x", 404),
        ("list", "data/k", 405),
        ("delete", "config", 405),
        ("read", "delete/k", 405),
    ],
)
async def test_unknown_paths_and_operations(
    kv: KVv2Backend, operation: str, path: str, status: int
) -> None:
    assert (await fails(kv, operation, path, {"data": {}})).status == status


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": "not-a-map"},
        {"data": ["list"]},
        {"data": {"a": 1}, "options": "nope"},
        {"data": {"a": 1}, "options": {"cas": [1]}},
    ],
)
async def test_hostile_write_bodies(kv: KVv2Backend, body: dict[str, object]) -> None:
    assert (await fails(kv, "create", "data/k", body)).status == 400


@pytest.mark.parametrize(
    "body",
    [
        {"max_versions": "many"},
        {"max_versions": -1},
        {"max_versions": 2**40},
        {"cas_required": "maybe"},
        {"delete_version_after": "soon"},
        {"custom_metadata": "not a map"},
        {"custom_metadata": {"a": {"nested": 1}}},
    ],
)
async def test_hostile_metadata_bodies(kv: KVv2Backend, body: dict[str, object]) -> None:
    assert (await fails(kv, "update", "metadata/k", body)).status == 400


async def test_hostile_paths_are_just_names(kv: KVv2Backend) -> None:
    weird = "../../etc/passwd'; DROP TABLE x;--/ünïcødé"
    await write(kv, weird, {"v": 1})
    read = await call(kv, "read", f"data/{weird}")
    assert read.data is not None and read.data["data"] == {"v": 1}
    assert (await fails(kv, "read", "data/../../etc")).status == 404


async def test_big_value_round_trips(kv: KVv2Backend) -> None:
    blob = "x" * 1_000_000
    await write(kv, "big", {"blob": blob})
    read = await call(kv, "read", "data/big")
    assert read.data is not None and read.data["data"]["blob"] == blob


async def test_version_query_param_must_be_an_integer(kv: KVv2Backend) -> None:
    await write(kv, "k", {"v": 1})
    assert (await fails(kv, "read", "data/k", query={"version": "one"})).status == 400


class BatchStorage(MemStorage):
    """A storage that also offers ``put_many`` (as the core's barrier view does); records
    every call, to show that a write is one atomic commit."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def put(self, key: str, value: bytes) -> None:
        self.calls.append(f"put {key}")
        await super().put(key, value)

    async def delete(self, key: str) -> None:
        self.calls.append(f"delete {key}")
        await super().delete(key)

    async def put_many(self, items: dict[str, bytes], deletes: list[str] | None = None) -> None:
        self.calls.append(f"put_many {sorted(items)} -{sorted(deletes or [])}")
        for key, value in items.items():
            await super().put(key, value)
        for key in deletes or []:
            await super().delete(key)


async def test_a_write_is_one_atomic_commit_when_storage_allows(clock: FakeClock) -> None:
    storage = BatchStorage()
    kv = KVv2Backend(storage, mount(options={"version": "2"}), clock=clock)
    await call(kv, "update", "metadata/k", {"max_versions": 1})
    await write(kv, "k", {"v": "1"})
    storage.calls.clear()
    assert await write(kv, "k", {"v": "2"}) == 2
    # Data, version table and the trimmed version 1 together: never one without the other.
    assert len(storage.calls) == 1 and storage.calls[0].startswith("put_many")
    assert "meta/k" in storage.calls[0] and "-['" in storage.calls[0]
    latest = await call(kv, "read", "data/k")
    assert latest.data is not None and latest.data["data"] == {"v": "2"}
    assert (await fails(kv, "read", "data/k", query={"version": "1"})).status == 404
    versions = [k for k in storage.items if k.startswith("ver/")]
    assert len(versions) == 1 and versions[0].endswith("/2"), versions
