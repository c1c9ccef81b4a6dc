"""The encryption barrier: everything the secrets core stores is AES-256-GCM ciphertext.

Layout in the state store (keys are not secret, values are)::

    secrets/core/seal-config   plaintext JSON: shares, threshold (needed before unsealing)
    secrets/core/root-key      root key, encrypted by the unseal key
    secrets/core/keyring       data keys by term, encrypted by the root key
    secrets/b/<path>           barrier entries, encrypted by the keyring's active term

A barrier entry is ``0x01 | term (4 bytes, big-endian) | nonce (12 bytes) | ciphertext+tag``.
The associated data is the header plus the entry's path, so a ciphertext copied to another
key, or given another term, fails authentication instead of decrypting as the wrong secret.
Every write draws a fresh random 96-bit nonce; with one key per term, rotate well before
2^32 writes (``sys/key-status`` reports the count since unseal).

Reads go through a small LRU of *ciphertexts* (never plaintext) so hot KV reads do not
cross to the store's thread; every write and delete goes through here and updates it. The
cache assumes this process is the only writer of ``secrets/``, which the single-server
design guarantees.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from socle.errors import ConflictError
from socle.secrets.core.errors import IntegrityError, SealedError
from socle.secrets.core.keyring import Keyring, KeyTerm
from socle.state.store import Delete, Put, StateStore

log = logging.getLogger("socle.secrets")

PREFIX = "secrets/"
SEAL_CONFIG_KEY = PREFIX + "core/seal-config"
ROOT_KEY_KEY = PREFIX + "core/root-key"
KEYRING_KEY = PREFIX + "core/keyring"
DATA_PREFIX = PREFIX + "b/"

_VERSION = 1
_HEADER = 5
_NONCE = 12
_ROOT_KEY_AD = b"socle-secrets/root-key/v1"
_KEYRING_AD = b"socle-secrets/keyring/v1"
_MISSING = object()


class InvalidUnsealKey(Exception):
    """The recombined key does not decrypt the root key."""


def _seal_blob(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def _open_blob(key: bytes, blob: bytes, ad: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], ad)


@dataclass(frozen=True)
class KeyStatus:
    term: int
    install_time: float
    encryptions: int


class Barrier:
    """Encrypts on write and decrypts on read; refuses everything while sealed."""

    def __init__(self, store: StateStore, *, cache_entries: int = 20_000) -> None:
        self._store = store
        self._keyring: Keyring | None = None
        self._ciphers: dict[int, AESGCM] = {}
        self._keyring_version = 0
        self._encryptions = 0
        self._cache: OrderedDict[str, bytes | None] = OrderedDict()
        self._cache_entries = cache_entries

    # -- seal state ---------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        return self._keyring is None

    async def seal_config(self) -> dict[str, Any] | None:
        record = await self._store.get(SEAL_CONFIG_KEY)
        return None if record is None else dict(json.loads(record.value))

    async def initialize(self, unseal_key: bytes, keyring: Keyring) -> int:
        """Write the wrapped root key and the keyring, after removing whatever an earlier,
        interrupted initialisation left; returns the keyring's version. The store counts as
        initialised only once :meth:`commit_seal_config` has run (the last write of
        ``sys/init``), so a crash in between leaves it uninitialised, never half-made."""
        if await self._store.get(SEAL_CONFIG_KEY) is not None:
            raise ConflictError("the secrets engine is already initialized")
        stale = await self._store.keys(DATA_PREFIX)
        if stale:
            await self._store.commit([Delete(key) for key in stale])
        self._cache.clear()
        await self._store.put(ROOT_KEY_KEY, _seal_blob(unseal_key, keyring.root_key, _ROOT_KEY_AD))
        return await self._store.put(
            KEYRING_KEY, _seal_blob(keyring.root_key, keyring.encode(), _KEYRING_AD)
        )

    async def commit_seal_config(self, config: dict[str, Any]) -> None:
        """Mark the store initialised; loses with ConflictError if another init won."""
        await self._store.put(SEAL_CONFIG_KEY, json.dumps(config).encode(), expect_version=0)

    async def unlock(self, unseal_key: bytes) -> None:
        """Decrypt the root key with ``unseal_key``, then the keyring with the root key."""
        root_record = await self._store.get(ROOT_KEY_KEY)
        keyring_record = await self._store.get(KEYRING_KEY)
        if root_record is None or keyring_record is None:
            raise InvalidUnsealKey("the secrets engine is not initialized")
        try:
            root_key = _open_blob(unseal_key, root_record.value, _ROOT_KEY_AD)
        except (InvalidTag, ValueError):
            raise InvalidUnsealKey("the unseal key shares do not combine to the key") from None
        try:
            keyring = Keyring.decode(
                root_key, _open_blob(root_key, keyring_record.value, _KEYRING_AD)
            )
        except (InvalidTag, ValueError) as exc:
            raise IntegrityError(KEYRING_KEY) from exc
        self._install(keyring, keyring_record.version)

    async def check_unseal_key(self, unseal_key: bytes) -> bool:
        """Whether ``unseal_key`` opens the stored root key (generate-root and rekey prove
        a quorum of shares this way without touching the unsealed state)."""
        root_record = await self._store.get(ROOT_KEY_KEY)
        if root_record is None:
            return False
        try:
            _open_blob(unseal_key, root_record.value, _ROOT_KEY_AD)
        except (InvalidTag, ValueError):
            return False
        return True

    async def rekey(self, new_unseal_key: bytes, seal_config: dict[str, Any]) -> None:
        """Wrap the root key with a new unseal key and record the new share layout, in one
        commit: a crash leaves either the old shares or the new ones working, never a mix.
        The keyring and every entry are untouched (see the key hierarchy in ``keyring``)."""
        keyring = self._require()
        await self._store.commit(
            [
                Put(ROOT_KEY_KEY, _seal_blob(new_unseal_key, keyring.root_key, _ROOT_KEY_AD)),
                Put(SEAL_CONFIG_KEY, json.dumps(seal_config).encode()),
            ]
        )

    def unlock_with(self, keyring: Keyring, version: int) -> None:
        """Unlock with a keyring already in memory (right after ``initialize``)."""
        self._install(keyring, version)

    def _install(self, keyring: Keyring, version: int) -> None:
        self._keyring = keyring
        self._keyring_version = version
        self._ciphers = {term: AESGCM(t.key) for term, t in keyring.terms.items()}
        self._cache.clear()

    def lock(self) -> None:
        """Forget every key. Python cannot wipe memory; dropping references is what we can do."""
        self._keyring = None
        self._ciphers = {}
        self._encryptions = 0
        self._cache.clear()

    async def rotate(self) -> KeyTerm:
        """Add a new term and use it for every new write (``sys/rotate``)."""
        keyring = self._require()
        new = keyring.rotated()
        version = await self._store.put(
            KEYRING_KEY,
            _seal_blob(new.root_key, new.encode(), _KEYRING_AD),
            expect_version=self._keyring_version,
        )
        self._install(new, version)
        self._encryptions = 0
        return new.active

    def key_status(self) -> KeyStatus:
        active = self._require().active
        return KeyStatus(active.term, active.install_time, self._encryptions)

    def _require(self) -> Keyring:
        if self._keyring is None:
            raise SealedError()
        return self._keyring

    # -- entry crypto -------------------------------------------------------------------

    def encrypt(self, path: str, plaintext: bytes) -> bytes:
        keyring = self._require()
        term = keyring.active_term
        header = bytes([_VERSION]) + term.to_bytes(4, "big")
        nonce = secrets.token_bytes(_NONCE)
        self._encryptions += 1
        return (
            header + nonce + self._ciphers[term].encrypt(nonce, plaintext, header + path.encode())
        )

    def decrypt(self, path: str, blob: bytes) -> bytes:
        self._require()
        if len(blob) < _HEADER + _NONCE + 16 or blob[0] != _VERSION:
            raise IntegrityError(path)
        header = blob[:_HEADER]
        cipher = self._ciphers.get(int.from_bytes(header[1:], "big"))
        if cipher is None:
            raise IntegrityError(path)
        nonce = blob[_HEADER : _HEADER + _NONCE]
        try:
            return cipher.decrypt(nonce, blob[_HEADER + _NONCE :], header + path.encode())
        except InvalidTag:
            raise IntegrityError(path) from None

    # -- storage ------------------------------------------------------------------------

    def _remember(self, path: str, blob: bytes | None) -> None:
        self._cache[path] = blob
        self._cache.move_to_end(path)
        if len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    async def get(self, path: str) -> bytes | None:
        self._require()
        blob = self._cache.get(path, _MISSING)
        if blob is _MISSING:
            record = await self._store.get(DATA_PREFIX + path)
            blob = None if record is None else record.value
            self._remember(path, blob)
        else:
            self._cache.move_to_end(path)
        return None if blob is None else self.decrypt(path, blob)  # type: ignore[arg-type]

    async def put(self, path: str, value: bytes) -> None:
        blob = self.encrypt(path, value)
        await self._store.put(DATA_PREFIX + path, blob)
        self._remember(path, blob)

    async def put_many(self, items: dict[str, bytes], deletes: list[str] | None = None) -> None:
        """Write several entries (and delete others) atomically."""
        blobs = {path: self.encrypt(path, value) for path, value in items.items()}
        ops: list[Put | Delete] = [Put(DATA_PREFIX + p, b) for p, b in blobs.items()]
        ops += [Delete(DATA_PREFIX + p) for p in deletes or []]
        await self._store.commit(ops)
        for path, blob in blobs.items():
            self._remember(path, blob)
        for path in deletes or []:
            self._remember(path, None)

    async def delete(self, path: str) -> None:
        self._require()
        await self._store.delete(DATA_PREFIX + path)
        self._remember(path, None)

    async def keys(self, prefix: str) -> list[str]:
        """Every entry path under ``prefix`` (recursively), sorted."""
        self._require()
        cut = len(DATA_PREFIX)
        return [key[cut:] for key in await self._store.keys(DATA_PREFIX + prefix)]

    async def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every entry under ``prefix`` decrypted, in one store query (used at unseal to
        rebuild schedules, where one round trip per entry would be slow). An entry that
        fails authentication is logged and skipped, so one damaged record cannot keep the
        whole engine sealed; reading it directly still raises :class:`IntegrityError`."""
        self._require()
        cut = len(DATA_PREFIX)
        out: list[tuple[str, bytes]] = []
        for record in await self._store.scan(DATA_PREFIX + prefix):
            path = record.key[cut:]
            try:
                out.append((path, self.decrypt(path, record.value)))
            except IntegrityError:
                log.error("storage entry %r failed its integrity check; skipped", path)
        return out

    async def list(self, prefix: str) -> list[str]:
        """Direct children of ``prefix``; sub-folders end with ``/`` (Vault's list shape)."""
        children: dict[str, None] = {}
        for key in await self.keys(prefix):
            head, sep, _ = key[len(prefix) :].partition("/")
            if head or sep:
                children[head + sep] = None
        return list(children)

    async def delete_prefix(self, prefix: str) -> int:
        paths = await self.keys(prefix)
        if paths:
            await self._store.commit([Delete(DATA_PREFIX + p) for p in paths])
            for path in paths:
                self._remember(path, None)
        return len(paths)


class StorageView:
    """A backend's key space: the barrier under a fixed prefix (``logical/<uuid>/``).

    Implements :class:`socle.secrets.backend.Storage`. Keys are relative; the view cannot
    reach outside its prefix because it only ever prepends.
    """

    def __init__(self, barrier: Barrier, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise ValueError("a storage view prefix ends with '/'")
        self._barrier = barrier
        self.prefix = prefix

    async def get(self, key: str) -> bytes | None:
        return await self._barrier.get(self.prefix + key)

    async def put(self, key: str, value: bytes) -> None:
        await self._barrier.put(self.prefix + key, value)

    async def delete(self, key: str) -> None:
        await self._barrier.delete(self.prefix + key)

    async def put_many(self, items: dict[str, bytes], deletes: list[str] | None = None) -> None:
        """Write several entries (and delete others) in one atomic commit: one fsync where
        sequential puts would wait for one each. Optional for a Storage (engines check)."""
        await self._barrier.put_many(
            {self.prefix + k: v for k, v in items.items()},
            [self.prefix + k for k in deletes or []],
        )

    async def list(self, prefix: str) -> list[str]:
        return await self._barrier.list(self.prefix + prefix)

    async def get_json(self, key: str) -> Any:
        raw = await self.get(key)
        return None if raw is None else json.loads(raw)

    async def put_json(self, key: str, value: Any) -> None:
        await self.put(key, json.dumps(value, separators=(",", ":")).encode())

    async def clear(self, prefix: str = "") -> int:
        """Delete every entry under ``prefix`` (the whole view by default)."""
        return await self._barrier.delete_prefix(self.prefix + prefix)
