"""Transit engine: keys, encrypt/decrypt/rewrap, versions, batches, hostile input."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from socle.secrets.engines._transit_keys import ERR_TOO_OLD, KeyError_, Keyring, b64decode_go
from socle.secrets.engines.transit import TransitBackend
from tests.unit.secrets.engines.enginekit import FakeClock, call, exists, fails, mount
from tests.unit.secrets.engines.memstorage import MemStorage


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transit(clock: FakeClock) -> TransitBackend:
    return TransitBackend(MemStorage(), mount("transit/", "transit"), clock=clock)


async def encrypt(transit: TransitBackend, name: str, plaintext: bytes, **extra: object) -> str:
    response = await call(
        transit, "update", f"encrypt/{name}", {"plaintext": b64(plaintext), **extra}
    )
    assert response.data is not None
    return str(response.data["ciphertext"])


async def decrypt(transit: TransitBackend, name: str, ciphertext: str) -> bytes:
    response = await call(transit, "update", f"decrypt/{name}", {"ciphertext": ciphertext})
    assert response.data is not None
    return base64.b64decode(response.data["plaintext"])


async def test_create_read_list_key(transit: TransitBackend) -> None:
    assert await exists(transit, "keys/orders")  # no existence check: writes need "update"
    assert not await exists(transit, "encrypt/orders")
    created = await call(transit, "create", "keys/orders", {"type": "aes256-gcm96"})
    assert created.data is not None and created.data["latest_version"] == 1
    assert await exists(transit, "encrypt/orders")
    read = await call(transit, "read", "keys/orders")
    assert read.data is not None
    assert read.data["type"] == "aes256-gcm96"
    assert read.data["keys"] == {"1": 1_700_000_000}
    assert read.data["min_decryption_version"] == 1
    assert read.data["min_encryption_version"] == 0
    assert read.data["deletion_allowed"] is False
    assert read.data["supports_encryption"] is True
    again = await call(transit, "create", "keys/orders", {})
    assert again.warnings == ["key orders already existed"]
    await call(transit, "create", "keys/chacha", {"type": "chacha20-poly1305"})
    assert (await call(transit, "list", "keys")).data == {"keys": ["chacha", "orders"]}


@pytest.mark.parametrize("key_type", ["aes256-gcm96", "aes128-gcm96", "chacha20-poly1305"])
async def test_round_trip_each_type(transit: TransitBackend, key_type: str) -> None:
    await call(transit, "create", "keys/k", {"type": key_type})
    ciphertext = await encrypt(transit, "k", b"hello world")
    assert ciphertext.startswith("vault:v1:")
    assert await decrypt(transit, "k", ciphertext) == b"hello world"
    assert await decrypt(transit, "k", await encrypt(transit, "k", b"")) == b""


async def test_ciphertext_layout_is_vaults(transit: TransitBackend) -> None:
    """vault:v1:base64(12-byte nonce || AES-GCM ciphertext+tag) with the stored key."""
    await call(transit, "create", "keys/k", {})
    ciphertext = await encrypt(transit, "k", b"payload")
    blob = base64.b64decode(ciphertext.split(":", 2)[2])
    stored = transit._storage.items["policy/k"]  # type: ignore[attr-defined]
    import json

    key = base64.b64decode(json.loads(stored)["versions"]["1"][0])
    assert AESGCM(key).decrypt(blob[:12], blob[12:], None) == b"payload"


async def test_encrypt_upserts_only_on_create(transit: TransitBackend) -> None:
    assert not await exists(transit, "encrypt/fresh")
    error = await fails(transit, "update", "encrypt/fresh", {"plaintext": b64(b"x")})
    assert error.errors == ["encryption key not found"]
    response = await call(transit, "create", "encrypt/fresh", {"plaintext": b64(b"x")})
    assert response.data is not None and response.data["key_version"] == 1
    assert await exists(transit, "encrypt/fresh")


async def test_rotate_rewrap_and_min_decryption_version(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    old = await encrypt(transit, "k", b"secret")
    rotated = await call(transit, "update", "keys/k/rotate", {})
    assert rotated.data is not None and rotated.data["latest_version"] == 2
    new = await encrypt(transit, "k", b"secret")
    assert new.startswith("vault:v2:")
    assert await decrypt(transit, "k", old) == b"secret"

    rewrapped = await call(transit, "update", "rewrap/k", {"ciphertext": old})
    assert rewrapped.data is not None and rewrapped.data["key_version"] == 2
    assert str(rewrapped.data["ciphertext"]).startswith("vault:v2:")

    await call(transit, "update", "keys/k/config", {"min_decryption_version": 2})
    error = await fails(transit, "update", "decrypt/k", {"ciphertext": old})
    assert error.status == 400 and error.errors == [ERR_TOO_OLD]
    assert await decrypt(transit, "k", rewrapped.data["ciphertext"]) == b"secret"
    # Encrypting with an explicitly old version is refused too.
    error = await fails(transit, "update", "encrypt/k", {"plaintext": b64(b"x"), "key_version": 1})
    assert "less than the minimum" in error.errors[0]


async def test_key_version_selection(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    await call(transit, "update", "keys/k/rotate", {})
    older = await encrypt(transit, "k", b"x", key_version=1)
    assert older.startswith("vault:v1:")
    error = await fails(transit, "update", "encrypt/k", {"plaintext": b64(b"x"), "key_version": 9})
    assert "higher than the latest" in error.errors[0]


async def test_config_validation(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    error = await fails(transit, "update", "keys/k/config", {"min_decryption_version": 5})
    assert error.errors == ["cannot set min decryption version of 5, latest key version is 1"]
    error = await fails(transit, "update", "keys/k/config", {"min_decryption_version": -1})
    assert error.status == 400
    zero = await call(transit, "update", "keys/k/config", {"min_decryption_version": 0})
    assert zero.warnings and "forcing minimum to 1" in zero.warnings[0]
    error = await fails(transit, "update", "keys/nope/config", {"deletion_allowed": True})
    assert error.errors == ["no existing key named nope could be found"]
    error = await fails(transit, "update", "keys/k/config", {"auto_rotate_period": "10m"})
    assert "at least an hour" in error.errors[0]


async def test_delete_only_when_allowed(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    error = await fails(transit, "delete", "keys/k")
    assert error.errors == ["error deleting policy k: deletion is not allowed for this key"]
    await call(transit, "update", "keys/k/config", {"deletion_allowed": True})
    assert (await call(transit, "delete", "keys/k")).status is None
    assert (await fails(transit, "read", "keys/k")).status == 404
    assert (await fails(transit, "delete", "keys/k")).status == 400


async def test_batch_encrypt_decrypt_with_item_errors(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    response = await call(
        transit,
        "update",
        "encrypt/k",
        {"batch_input": [{"plaintext": b64(b"a"), "reference": "r1"}, {"plaintext": b64(b"b")}]},
    )
    assert response.data is not None
    results = response.data["batch_results"]
    assert [r["key_version"] for r in results] == [1, 1]
    assert results[0]["reference"] == "r1"

    mixed = await call(
        transit,
        "update",
        "decrypt/k",
        {"batch_input": [{"ciphertext": results[0]["ciphertext"]}, {"ciphertext": "junk"}]},
    )
    assert mixed.status == 400
    assert mixed.data is not None
    assert base64.b64decode(mixed.data["batch_results"][0]["plaintext"]) == b"a"
    assert mixed.data["batch_results"][1]["error"] == "invalid ciphertext: no prefix"

    partial = await call(
        transit,
        "update",
        "decrypt/k",
        {
            "batch_input": [{"ciphertext": results[1]["ciphertext"]}, {"ciphertext": "junk"}],
            "partial_failure_response_code": 207,
        },
    )
    assert partial.status == 207


@pytest.mark.parametrize(
    ("ciphertext", "message"),
    [
        ("nope", "invalid ciphertext: no prefix"),
        ("vault:v1", "invalid ciphertext: wrong number of fields"),
        ("vault:vX:AAAA", "invalid ciphertext: version number could not be decoded"),
        ("vault:v99:AAAA", "invalid ciphertext: version is too new"),
        ("vault:v1:!!!!", "invalid ciphertext: could not decode base64"),
        ("vault:v1:AAAA", "invalid ciphertext length"),
        ("vault:v1:" + b64(bytes(40)), "cipher: message authentication failed"),
        ("", "missing ciphertext to decrypt"),
    ],
)
async def test_bad_ciphertexts(transit: TransitBackend, ciphertext: str, message: str) -> None:
    await call(transit, "create", "keys/k", {})
    error = await fails(transit, "update", "decrypt/k", {"ciphertext": ciphertext})
    assert error.status == 400 and error.errors == [message]


async def test_tampered_ciphertext_fails_authentication(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    ciphertext = await encrypt(transit, "k", b"do not touch")
    blob = bytearray(base64.b64decode(ciphertext.split(":", 2)[2]))
    blob[-1] ^= 1
    error = await fails(
        transit, "update", "decrypt/k", {"ciphertext": "vault:v1:" + b64(bytes(blob))}
    )
    assert error.errors == ["cipher: message authentication failed"]


async def test_associated_data_is_bound(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    aad = b64(b"tenant-1")
    ciphertext = await encrypt(transit, "k", b"x", associated_data=aad)
    ok = await call(
        transit, "update", "decrypt/k", {"ciphertext": ciphertext, "associated_data": aad}
    )
    assert ok.data is not None and ok.data["plaintext"] == b64(b"x")
    assert (await fails(transit, "update", "decrypt/k", {"ciphertext": ciphertext})).status == 400


@pytest.mark.parametrize(
    "body",
    [
        {"plaintext": "not base64!"},
        {"plaintext": "QQ"},
        {"plaintext": 12},
        {"plaintext": b64(b"x"), "key_version": "latest"},
        {"batch_input": "nope"},
        {"batch_input": []},
        {"batch_input": [1, 2]},
        {},
    ],
)
async def test_hostile_encrypt_input(transit: TransitBackend, body: dict[str, object]) -> None:
    await call(transit, "create", "keys/k", {})
    assert (await fails(transit, "update", "encrypt/k", body)).status == 400


async def test_go_style_base64_errors() -> None:
    with pytest.raises(KeyError_, match="illegal base64 data at input byte 3"):
        b64decode_go("abc!")
    with pytest.raises(KeyError_, match="illegal base64 data at input byte"):
        b64decode_go("QQ")
    assert b64decode_go("QQ==") == b"A"


@pytest.mark.parametrize(
    "body", [{"type": "rsa-2048"}, {"type": "nope"}, {"derived": True}, {"exportable": "maybe"}]
)
async def test_unsupported_key_creation(transit: TransitBackend, body: dict[str, object]) -> None:
    assert (await fails(transit, "create", "keys/k", body)).status == 400


@pytest.mark.parametrize(
    ("operation", "path", "status"),
    [
        ("read", "nothing", 404),
        ("update", "keys/bad name", 404),
        ("update", "keys/k/explode", 404),
        ("read", "encrypt/k", 405),
        ("update", "decrypt/missing", 400),
        ("update", "keys/missing/rotate", 400),
    ],
)
async def test_unknown_paths(
    transit: TransitBackend, operation: str, path: str, status: int
) -> None:
    assert (await fails(transit, operation, path, {"ciphertext": "vault:v1:AAAA"})).status == status


async def test_datakey(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    plain = await call(transit, "update", "datakey/plaintext/k", {"bits": 512})
    assert plain.data is not None
    key = base64.b64decode(plain.data["plaintext"])
    assert len(key) == 64
    assert await decrypt(transit, "k", plain.data["ciphertext"]) == key
    wrapped = await call(transit, "update", "datakey/wrapped/k", {})
    assert wrapped.data is not None and "plaintext" not in wrapped.data
    assert (await fails(transit, "update", "datakey/plaintext/k", {"bits": 100})).status == 400


async def test_hmac_and_verify(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    signed = await call(transit, "update", "hmac/k/sha2-512", {"input": b64(b"msg")})
    assert signed.data is not None
    tag = signed.data["hmac"]
    assert tag.startswith("vault:v1:")
    ok = await call(transit, "update", "verify/k/sha2-512", {"input": b64(b"msg"), "hmac": tag})
    assert ok.data == {"valid": True}
    bad = await call(transit, "update", "verify/k/sha2-512", {"input": b64(b"other"), "hmac": tag})
    assert bad.data == {"valid": False}


async def test_export_only_when_exportable(transit: TransitBackend) -> None:
    await call(transit, "create", "keys/k", {})
    assert (await fails(transit, "read", "export/encryption-key/k")).status == 400
    await call(transit, "create", "keys/e", {"exportable": True})
    exported = await call(transit, "read", "export/encryption-key/e/latest")
    assert exported.data is not None and len(base64.b64decode(exported.data["keys"]["1"])) == 32


async def test_random_and_hash(transit: TransitBackend) -> None:
    random = await call(transit, "update", "random/16", {"format": "hex"})
    assert random.data is not None and len(random.data["random_bytes"]) == 32
    default = await call(transit, "update", "random", {})
    assert default.data is not None and len(base64.b64decode(default.data["random_bytes"])) == 32
    assert (await fails(transit, "update", "random", {"bytes": 10**9})).status == 400
    assert (await fails(transit, "update", "random", {"bytes": 0})).status == 400
    digest = await call(transit, "update", "hash/sha2-256", {"input": b64(b"abc")})
    assert digest.data == {"sum": hashlib.sha256(b"abc").hexdigest()}
    assert (await fails(transit, "update", "hash/md5", {"input": b64(b"abc")})).status == 400


async def test_auto_rotation_is_lazy(transit: TransitBackend, clock: FakeClock) -> None:
    await call(transit, "create", "keys/k", {"auto_rotate_period": "1h"})
    assert (await encrypt(transit, "k", b"x")).startswith("vault:v1:")
    clock.advance(3601)
    assert (await encrypt(transit, "k", b"x")).startswith("vault:v2:")


def test_keyring_serialization_round_trip() -> None:
    ring = Keyring.create("k", "aes256-gcm96", 100)
    ring.rotate(200)
    ring.min_decryption_version = 2
    again = Keyring.from_json(ring.to_json())
    assert again == ring
    ciphertext, _ = ring.encrypt(b"x")
    assert again.decrypt(ciphertext) == (b"x", 2)
