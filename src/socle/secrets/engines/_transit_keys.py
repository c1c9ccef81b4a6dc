"""Transit key rings: versioned symmetric keys and Vault's ciphertext format.

A ciphertext is ``vault:v<N>:<base64(nonce || sealed)>`` with a 96-bit random nonce, the
same layout Vault uses, so values produced here look (and are versioned) like Vault's. Each
version also carries its own HMAC key, as in Vault, so ``hmac/`` never reuses an
encryption key for a second purpose.

Errors a client caused are :class:`KeyError_` with Vault's wording; the HTTP layer turns
them into 400s (or into per-item errors in a batch).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

KEY_SIZES = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32}
"""The symmetric key types we implement; Vault's asymmetric and managed types are not."""
NONCE_SIZE = 12
TAG_SIZE = 16
PREFIX = "vault:v"
ERR_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
_B64_ALPHABET = re.compile(rb"[A-Za-z0-9+/=]")

Random = Callable[[int], bytes]


class KeyError_(Exception):
    """A client error on a transit key operation, worded like Vault's."""


def b64decode_go(text: str) -> bytes:
    """Strict standard base64, failing with Go's message (``illegal base64 data at ...``)."""
    raw = text.encode("utf-8", "surrogatepass")
    for index, byte in enumerate(raw):
        if not _B64_ALPHABET.fullmatch(bytes([byte])):
            raise KeyError_(f"illegal base64 data at input byte {index}")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        position = len(raw) - (len(raw) % 4 or 4)
        first_pad = raw.find(b"=")
        if 0 <= first_pad < position:
            position = first_pad
        raise KeyError_(f"illegal base64 data at input byte {max(position, 0)}") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class KeyVersion:
    key: bytes
    hmac_key: bytes
    created: int
    """Unix seconds, shown in ``keys`` of the key read response like Vault's symmetric keys."""


@dataclass
class Keyring:
    name: str
    type: str
    versions: dict[int, KeyVersion] = field(default_factory=dict)
    latest_version: int = 0
    min_decryption_version: int = 1
    min_encryption_version: int = 0
    deletion_allowed: bool = False
    exportable: bool = False
    allow_plaintext_backup: bool = False
    auto_rotate_period: int = 0

    @classmethod
    def create(cls, name: str, key_type: str, now: int, random: Random = os.urandom) -> Keyring:
        if key_type not in KEY_SIZES:
            raise KeyError_(f"unknown key type {key_type}")
        ring = cls(name=name, type=key_type)
        ring.rotate(now, random)
        return ring

    def rotate(self, now: int, random: Random = os.urandom) -> None:
        self.latest_version += 1
        self.versions[self.latest_version] = KeyVersion(
            key=random(KEY_SIZES[self.type]), hmac_key=random(32), created=now
        )

    def _cipher(self, version: int) -> AESGCM | ChaCha20Poly1305:
        key = self.versions[version].key
        if self.type == "chacha20-poly1305":
            return ChaCha20Poly1305(key)
        return AESGCM(key)

    def encryption_version(self, requested: int) -> int:
        if requested == 0:
            return self.latest_version
        if requested < 0:
            raise KeyError_("requested version for encryption is negative")
        if requested > self.latest_version:
            raise KeyError_(
                "requested version for encryption is higher than the latest key version"
            )
        if requested < max(self.min_encryption_version, self.min_decryption_version):
            raise KeyError_(
                "requested version for encryption is less than the minimum encryption key version"
            )
        return requested

    def encrypt(
        self,
        plaintext: bytes,
        version: int = 0,
        aad: bytes | None = None,
        random: Random = os.urandom,
    ) -> tuple[str, int]:
        number = self.encryption_version(version)
        nonce = random(NONCE_SIZE)
        sealed = self._cipher(number).encrypt(nonce, plaintext, aad or None)
        return f"{PREFIX}{number}:{b64(nonce + sealed)}", number

    def parse(self, ciphertext: str) -> tuple[int, str]:
        """Version and base64 body of a ciphertext, checked against the key's policy."""
        if not ciphertext.startswith(PREFIX):
            raise KeyError_("invalid ciphertext: no prefix")
        version_text, sep, body = ciphertext[len(PREFIX) :].partition(":")
        if not sep:
            raise KeyError_("invalid ciphertext: wrong number of fields")
        if not re.fullmatch(r"\d{1,9}", version_text):
            raise KeyError_("invalid ciphertext: version number could not be decoded")
        number = max(int(version_text), 1)  # Vault reads v0 as v1 (its first format)
        if number > self.latest_version:
            raise KeyError_("invalid ciphertext: version is too new")
        if number < self.min_decryption_version or number not in self.versions:
            raise KeyError_(ERR_TOO_OLD)
        return number, body

    def decrypt(self, ciphertext: str, aad: bytes | None = None) -> tuple[bytes, int]:
        number, body = self.parse(ciphertext)
        try:
            blob = base64.b64decode(body.encode(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyError_("invalid ciphertext: could not decode base64") from None
        if len(blob) < NONCE_SIZE + TAG_SIZE:
            raise KeyError_("invalid ciphertext length")
        try:
            plaintext = self._cipher(number).decrypt(
                blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad or None
            )
        except InvalidTag:
            raise KeyError_("cipher: message authentication failed") from None
        return plaintext, number

    def hmac(self, data: bytes, algorithm: str, version: int = 0) -> str:
        number = self.encryption_version(version)
        digest = hmac.new(self.versions[number].hmac_key, data, HASHES[algorithm]).digest()
        return f"{PREFIX}{number}:{b64(digest)}"

    def verify_hmac(self, data: bytes, algorithm: str, given: str) -> bool:
        number, body = self.parse(given)
        expected = hmac.new(self.versions[number].hmac_key, data, HASHES[algorithm]).digest()
        return hmac.compare_digest(b64(expected), body)

    def describe(self) -> dict[str, Any]:
        """The key read response (Vault's ``formatKeyPolicy`` fields for symmetric keys)."""
        return {
            "name": self.name,
            "type": self.type,
            "derived": False,
            "deletion_allowed": self.deletion_allowed,
            "exportable": self.exportable,
            "allow_plaintext_backup": self.allow_plaintext_backup,
            # Versions below min_decryption_version are archived: Vault does not list them.
            "keys": {
                str(n): v.created
                for n, v in sorted(self.versions.items())
                if n >= self.min_decryption_version
            },
            "latest_version": self.latest_version,
            "min_available_version": 0,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "supports_encryption": True,
            "supports_decryption": True,
            "supports_derivation": True,
            "supports_signing": False,
            "auto_rotate_period": self.auto_rotate_period,
            "imported_key": False,
            "soft_deleted": False,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "versions": {
                str(n): [b64(v.key), b64(v.hmac_key), v.created] for n, v in self.versions.items()
            },
            "latest_version": self.latest_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "deletion_allowed": self.deletion_allowed,
            "exportable": self.exportable,
            "allow_plaintext_backup": self.allow_plaintext_backup,
            "auto_rotate_period": self.auto_rotate_period,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Keyring:
        return cls(
            name=raw["name"],
            type=raw["type"],
            versions={
                int(n): KeyVersion(base64.b64decode(v[0]), base64.b64decode(v[1]), int(v[2]))
                for n, v in raw["versions"].items()
            },
            latest_version=int(raw["latest_version"]),
            min_decryption_version=int(raw["min_decryption_version"]),
            min_encryption_version=int(raw["min_encryption_version"]),
            deletion_allowed=bool(raw["deletion_allowed"]),
            exportable=bool(raw["exportable"]),
            allow_plaintext_backup=bool(raw["allow_plaintext_backup"]),
            auto_rotate_period=int(raw.get("auto_rotate_period", 0)),
        )


HASHES: dict[str, Callable[..., Any]] = {
    "sha2-224": hashlib.sha224,
    "sha2-256": hashlib.sha256,
    "sha2-384": hashlib.sha384,
    "sha2-512": hashlib.sha512,
    "sha3-224": hashlib.sha3_224,
    "sha3-256": hashlib.sha3_256,
    "sha3-384": hashlib.sha3_384,
    "sha3-512": hashlib.sha3_512,
}
