"""KV v1 and v2 through the real HTTP server with hvac, Vault's Python client."""

from __future__ import annotations

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidPath, InvalidRequest

from tests.integration.secrets.conftest import VaultServer


def strict(client: hvac.Client) -> hvac.Client:
    """Send LIST as ``GET ?list=true``: uvicorn's httptools parser refuses the LIST verb."""
    client.adapter.strict_http = True
    return client


@pytest.fixture
def client(vault_server: VaultServer) -> hvac.Client:
    client = strict(vault_server.client())
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    return client


def test_v2_versions_cas_and_metadata(client: hvac.Client) -> None:
    kv = client.secrets.kv.v2
    kv.configure(max_versions=3, cas_required=False, mount_point="secret")
    assert kv.read_configuration(mount_point="secret")["data"]["max_versions"] == 3

    first = kv.create_or_update_secret("app/db", {"password": "one"}, cas=0, mount_point="secret")
    assert first["data"]["version"] == 1
    with pytest.raises(InvalidRequest, match="check-and-set parameter did not match"):
        kv.create_or_update_secret("app/db", {"password": "x"}, cas=0, mount_point="secret")
    kv.create_or_update_secret("app/db", {"password": "two"}, cas=1, mount_point="secret")

    latest = kv.read_secret_version("app/db", mount_point="secret", raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"password": "two"}
    assert latest["data"]["metadata"]["version"] == 2
    older = kv.read_secret_version(
        "app/db", version=1, mount_point="secret", raise_on_deleted_version=True
    )
    assert older["data"]["data"] == {"password": "one"}

    with pytest.warns(DeprecationWarning):  # hvac's patch() reads without the new flag
        kv.patch("app/db", {"user": "svc"}, mount_point="secret")
    patched = kv.read_secret_version("app/db", mount_point="secret", raise_on_deleted_version=True)
    assert patched["data"]["data"] == {"password": "two", "user": "svc"}

    kv.update_metadata(
        "app/db", max_versions=2, custom_metadata={"owner": "ops"}, mount_point="secret"
    )
    kv.create_or_update_secret("app/db", {"password": "four"}, mount_point="secret")
    meta = kv.read_secret_metadata("app/db", mount_point="secret")["data"]
    assert meta["current_version"] == 4
    assert sorted(meta["versions"]) == ["3", "4"]
    assert meta["custom_metadata"] == {"owner": "ops"}


def test_v2_delete_undelete_destroy(client: hvac.Client) -> None:
    kv = client.secrets.kv.v2
    kv.create_or_update_secret("k", {"v": 1}, mount_point="secret")
    kv.create_or_update_secret("k", {"v": 2}, mount_point="secret")
    kv.delete_latest_version_of_secret("k", mount_point="secret")
    with pytest.raises(InvalidPath):
        kv.read_secret_version("k", mount_point="secret", raise_on_deleted_version=True)
    kv.undelete_secret_versions("k", versions=[2], mount_point="secret")
    assert kv.read_secret_version("k", mount_point="secret", raise_on_deleted_version=True)["data"][
        "data"
    ] == {"v": 2}
    kv.destroy_secret_versions("k", versions=[1], mount_point="secret")
    meta = kv.read_secret_metadata("k", mount_point="secret")["data"]
    assert meta["versions"]["1"]["destroyed"] is True
    with pytest.raises(InvalidPath):
        kv.read_secret_version("k", version=1, mount_point="secret", raise_on_deleted_version=True)
    kv.delete_metadata_and_all_versions("k", mount_point="secret")
    with pytest.raises(InvalidPath):
        kv.read_secret_metadata("k", mount_point="secret")


def test_v2_deleted_version_metadata_is_readable(client: hvac.Client) -> None:
    kv = client.secrets.kv.v2
    kv.create_or_update_secret("k", {"v": 1}, mount_point="secret")
    kv.delete_latest_version_of_secret("k", mount_point="secret")
    answer = kv.read_secret_version("k", mount_point="secret", raise_on_deleted_version=False)
    assert answer["data"]["data"] is None
    assert answer["data"]["metadata"]["deletion_time"] != ""


def test_v2_list_folders(client: hvac.Client) -> None:
    kv = client.secrets.kv.v2
    for path in ["team/a", "team/b/c", "top"]:
        kv.create_or_update_secret(path, {"x": 1}, mount_point="secret")
    assert client.secrets.kv.v2.list_secrets("", mount_point="secret")["data"]["keys"] == [
        "team/",
        "top",
    ]
    assert kv.list_secrets("team", mount_point="secret")["data"]["keys"] == ["a", "b/"]
    with pytest.raises(InvalidPath):
        kv.list_secrets("nothing", mount_point="secret")


def test_v2_create_and_update_capabilities(client: hvac.Client, vault_server: VaultServer) -> None:
    """``exists`` lets the core tell create from update, so ACLs can allow one only."""
    kv = client.secrets.kv.v2
    kv.create_or_update_secret("present", {"v": 1}, mount_point="secret")
    client.sys.create_or_update_policy(
        "update-only", 'path "secret/data/*" { capabilities = ["update", "read"] }'
    )
    token = client.auth.token.create(policies=["update-only"], ttl="10m")["auth"]["client_token"]
    limited = vault_server.client(token)
    limited.secrets.kv.v2.create_or_update_secret("present", {"v": 2}, mount_point="secret")
    with pytest.raises(Forbidden):
        limited.secrets.kv.v2.create_or_update_secret("absent", {"v": 1}, mount_point="secret")


def test_v2_bad_requests(client: hvac.Client) -> None:
    with pytest.raises(InvalidRequest, match="no data provided"):
        client.adapter.post("/v1/secret/data/k", json={"nodata": 1})
    with pytest.raises(InvalidRequest):
        client.adapter.post("/v1/secret/data/k", json={"data": "not a map"})
    with pytest.raises(InvalidPath):
        client.adapter.get("/v1/secret/not-a-v2-path")
    with pytest.raises(InvalidRequest):
        client.adapter.post("/v1/secret/metadata/k", json={"max_versions": "lots"})


def test_v1(vault_server: VaultServer) -> None:
    client = strict(vault_server.client())
    client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    kv = client.secrets.kv.v1
    kv.create_or_update_secret("app/config", {"url": "https://x"}, mount_point="kv1")
    assert kv.read_secret("app/config", mount_point="kv1")["data"] == {"url": "https://x"}
    assert kv.list_secrets("app", mount_point="kv1")["data"]["keys"] == ["config"]
    kv.delete_secret("app/config", mount_point="kv1")
    with pytest.raises(InvalidPath):
        kv.read_secret("app/config", mount_point="kv1")
