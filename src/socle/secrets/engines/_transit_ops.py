"""Transit operations on one loaded key ring: batches, decrypt, rewrap, data keys, HMAC.

Pure functions of (key ring, request fields) → response, so the HTTP handlers in
:mod:`socle.secrets.engines.transit` only load the key and call one of these. Batch
semantics follow Vault: every item gets a result (``error`` for the ones that failed); the
status is 400 when any item failed, unless ``partial_failure_response_code`` says otherwise
for a batch where some items succeeded.
"""

from __future__ import annotations

from typing import Any

from socle.secrets.backend import Response, SecretsError
from socle.secrets.engines._params import get_int, get_str
from socle.secrets.engines._transit_keys import (
    HASHES,
    KeyError_,
    Keyring,
    Random,
    b64,
    b64decode_go,
)

MAX_BATCH = 10_000
"""Vault has no item limit beyond the request size; we bound the work one request can ask."""


def batch_items(
    data: dict[str, Any], field: str, missing: str
) -> tuple[list[dict[str, Any]], bool]:
    """The items to process and whether the request was a batch."""
    raw = data.get("batch_input")
    if raw is None:
        if field not in data:
            raise SecretsError(400, missing)
        return [data], False
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise SecretsError(400, "failed to parse batch input: expected a list of objects")
    if not raw:
        raise SecretsError(400, "missing batch input to process")
    if len(raw) > MAX_BATCH:
        raise SecretsError(400, f"batch_input has more than {MAX_BATCH} items")
    return raw, True


def respond(
    results: list[dict[str, Any]], batch: bool, data: dict[str, Any], items: list[dict[str, Any]]
) -> Response:
    if not batch:
        only = results[0]
        if "error" in only:
            raise SecretsError(400, only["error"])
        return Response(data=only)
    for result, item in zip(results, items, strict=True):
        if "reference" in item:
            result["reference"] = item["reference"]
    failed = sum(1 for r in results if "error" in r)
    body: dict[str, Any] = {"batch_results": results}
    if not failed:
        return Response(data=body)
    status = 400
    if failed < len(results) and data.get("partial_failure_response_code") is not None:
        status = get_int(data, "partial_failure_response_code")
        if not 100 <= status <= 599:
            raise SecretsError(400, "partial_failure_response_code must be an HTTP status code")
    return Response(data=body, status=status)


def text(item: dict[str, Any], name: str) -> str:
    value = item.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise KeyError_(f"{name} must be a string")
    return value


def optional_b64(item: dict[str, Any], name: str) -> bytes | None:
    value = text(item, name)
    return b64decode_go(value) if value else None


def item_int(item: dict[str, Any], name: str) -> int:
    try:
        return get_int(item, name)
    except SecretsError as exc:
        raise KeyError_(exc.errors[0]) from None


def encrypt_one(ring: Keyring, item: dict[str, Any], random: Random) -> dict[str, Any]:
    try:
        plaintext = b64decode_go(text(item, "plaintext"))
        aad = optional_b64(item, "associated_data")
        ciphertext, number = ring.encrypt(plaintext, item_int(item, "key_version"), aad, random)
    except KeyError_ as exc:
        return {"error": str(exc)}
    return {"ciphertext": ciphertext, "key_version": number}


def decrypt_one(ring: Keyring, item: dict[str, Any]) -> dict[str, Any]:
    try:
        ciphertext = text(item, "ciphertext")
        if not ciphertext:
            raise KeyError_("missing ciphertext to decrypt")
        plaintext, _ = ring.decrypt(ciphertext, optional_b64(item, "associated_data"))
    except KeyError_ as exc:
        return {"error": str(exc)}
    return {"plaintext": b64(plaintext)}


def rewrap_one(ring: Keyring, item: dict[str, Any], random: Random) -> dict[str, Any]:
    try:
        ciphertext = text(item, "ciphertext")
        if not ciphertext:
            raise KeyError_("missing ciphertext to decrypt")
        aad = optional_b64(item, "associated_data")
        plaintext, _ = ring.decrypt(ciphertext, aad)
        fresh, number = ring.encrypt(plaintext, item_int(item, "key_version"), aad, random)
    except KeyError_ as exc:
        return {"error": str(exc)}
    return {"ciphertext": fresh, "key_version": number}


def datakey(ring: Keyring, kind: str, data: dict[str, Any], random: Random) -> Response:
    bits = get_int(data, "bits", 256)
    if bits not in (128, 256, 512):
        raise SecretsError(400, "invalid bits length")
    key = random(bits // 8)
    try:
        aad = optional_b64(data, "associated_data")
        ciphertext, number = ring.encrypt(key, item_int(data, "key_version"), aad, random)
    except KeyError_ as exc:
        raise SecretsError(400, str(exc)) from None
    body: dict[str, Any] = {"ciphertext": ciphertext, "key_version": number}
    if kind == "plaintext":
        body["plaintext"] = b64(key)
    return Response(data=body)


def _algorithm(data: dict[str, Any], from_path: str | None) -> str:
    algorithm = from_path or get_str(data, "algorithm", "sha2-256") or "sha2-256"
    if algorithm not in HASHES:
        raise SecretsError(400, f"unsupported algorithm {algorithm[:32]}")
    return algorithm


def hmac_sign(ring: Keyring, data: dict[str, Any], from_path: str | None) -> Response:
    algorithm = _algorithm(data, from_path)
    items, batch = batch_items(data, "input", "missing input for HMAC")
    results: list[dict[str, Any]] = []
    for item in items:
        try:
            payload = b64decode_go(text(item, "input"))
            results.append({"hmac": ring.hmac(payload, algorithm, item_int(item, "key_version"))})
        except KeyError_ as exc:
            results.append({"error": str(exc)})
    return respond(results, batch, data, items)


def hmac_verify(ring: Keyring, data: dict[str, Any], from_path: str | None) -> Response:
    algorithm = _algorithm(data, from_path)
    items, batch = batch_items(data, "input", "missing input to verify")
    results: list[dict[str, Any]] = []
    for item in items:
        try:
            if item.get("signature"):
                raise KeyError_(f"signature verification is not supported for key type {ring.type}")
            given = text(item, "hmac")
            if not given:
                raise KeyError_("missing hmac value")
            payload = b64decode_go(text(item, "input"))
            results.append({"valid": ring.verify_hmac(payload, algorithm, given)})
        except KeyError_ as exc:
            results.append({"error": str(exc)})
    return respond(results, batch, data, items)


def export(ring: Keyring, kind: str, version: str | None) -> Response:
    if not ring.exportable:
        raise SecretsError(400, "key is not exportable")
    if version is None:
        numbers = sorted(ring.versions)
    else:
        number = ring.latest_version if version == "latest" else int(version)
        if number not in ring.versions or number < ring.min_decryption_version:
            raise SecretsError(400, "version not found")
        numbers = [number]
    keys = {
        str(n): b64(ring.versions[n].key if kind == "encryption-key" else ring.versions[n].hmac_key)
        for n in numbers
        if n >= ring.min_decryption_version
    }
    return Response(data={"name": ring.name, "type": ring.type, "keys": keys})
