"""The keyring: every data-encryption key the barrier ever used, by term.

Key hierarchy (as in Vault)::

    unseal key  (never stored; Shamir-split into the operators' shares)
      └─ encrypts the root key          -> secrets/core/root-key
           └─ encrypts the keyring      -> secrets/core/keyring
                └─ term N keys encrypt every barrier entry (secrets/b/...)

Rotation (``sys/rotate``) appends term N+1 and makes it active; old terms stay so that old
entries still decrypt (each ciphertext names its term). Rekeying the unseal key therefore
never re-encrypts data, and rotating data keys never touches the shares.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field

KEY_BYTES = 32


@dataclass(frozen=True)
class KeyTerm:
    term: int
    key: bytes = field(repr=False)
    install_time: float


@dataclass(frozen=True)
class Keyring:
    root_key: bytes = field(repr=False)
    terms: dict[int, KeyTerm]
    active_term: int

    @classmethod
    def new(cls, root_key: bytes, *, now: float | None = None) -> Keyring:
        first = KeyTerm(1, secrets.token_bytes(KEY_BYTES), time.time() if now is None else now)
        return cls(root_key=root_key, terms={1: first}, active_term=1)

    @property
    def active(self) -> KeyTerm:
        return self.terms[self.active_term]

    def rotated(self, *, now: float | None = None) -> Keyring:
        """A copy with a fresh key at the next term, made active."""
        term = max(self.terms) + 1
        new = KeyTerm(term, secrets.token_bytes(KEY_BYTES), time.time() if now is None else now)
        return Keyring(self.root_key, {**self.terms, term: new}, term)

    def encode(self) -> bytes:
        """Serialised form; only ever stored encrypted by the root key."""
        return json.dumps(
            {
                "active_term": self.active_term,
                "terms": [
                    {
                        "term": t.term,
                        "key": base64.b64encode(t.key).decode(),
                        "install_time": t.install_time,
                    }
                    for t in self.terms.values()
                ],
            }
        ).encode()

    @classmethod
    def decode(cls, root_key: bytes, data: bytes) -> Keyring:
        raw = json.loads(data)
        terms = {
            int(item["term"]): KeyTerm(
                int(item["term"]), base64.b64decode(item["key"]), float(item["install_time"])
            )
            for item in raw["terms"]
        }
        return cls(root_key=root_key, terms=terms, active_term=int(raw["active_term"]))
