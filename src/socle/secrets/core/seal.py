"""Shamir seal: initialise once, then gather unseal key shares until the threshold.

The unseal key exists only briefly in memory: at ``sys/init`` (to split and to wrap the
root key) and when the threshold of shares has been submitted (to unwrap it). The shares
gathered so far are kept in memory with a nonce, like Vault's ``sys/unseal`` progress; a
restart or ``reset`` forgets them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import uuid
from dataclasses import dataclass

from socle import __version__
from socle.errors import ConflictError
from socle.secrets.backend import SecretsError
from socle.secrets.core import shamir
from socle.secrets.core.barrier import Barrier, InvalidUnsealKey
from socle.secrets.core.keyring import KEY_BYTES, Keyring

BUILD_DATE = "2025-01-01T00:00:00Z"


@dataclass(frozen=True)
class SealConfig:
    secret_shares: int
    secret_threshold: int
    type: str = "shamir"

    def to_dict(self) -> dict[str, object]:
        return {
            "type": self.type,
            "secret_shares": self.secret_shares,
            "secret_threshold": self.secret_threshold,
        }


@dataclass(frozen=True)
class InitResult:
    shares: list[bytes]
    keyring: Keyring
    config: SealConfig


def decode_share(text: str, expected: int) -> bytes:
    """A share as hex (what ``keys`` holds) or base64 (``keys_base64``); Vault takes both."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text)
        if len(raw) == expected:
            return raw
    except ValueError:
        pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretsError(400, "'key' must be a valid hex or base64 string") from None
    if len(raw) != expected:
        raise SecretsError(400, "'key' has the wrong length for an unseal key share")
    return raw


class ShareQuorum:
    """Key shares gathered toward a threshold: unseal, generate-root and rekey all do this.

    A share already given is ignored (progress does not move), as in Vault; shares are
    compared in constant time.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.parts: list[bytes] = []

    @property
    def progress(self) -> int:
        return len(self.parts)

    def add(self, share: bytes) -> bool:
        """Add a share; True once the threshold is reached."""
        if not any(hmac.compare_digest(part, share) for part in self.parts):
            self.parts.append(share)
        return len(self.parts) >= self.threshold

    def take_key(self) -> bytes:
        """The combined key, forgetting the shares; ValueError for a bad combination."""
        parts, self.parts = self.parts, []
        return parts[0] if len(parts) == 1 else shamir.combine(parts)


class SealManager:
    def __init__(self, barrier: Barrier) -> None:
        self._barrier = barrier
        self.config: SealConfig | None = None
        self._quorum: ShareQuorum | None = None
        self._nonce = ""

    async def load(self) -> None:
        raw = await self._barrier.seal_config()
        self.config = (
            None
            if raw is None
            else SealConfig(int(raw["secret_shares"]), int(raw["secret_threshold"]))
        )

    @property
    def initialized(self) -> bool:
        return self.config is not None

    @property
    def share_bytes(self) -> int:
        """Length of one share: the key plus Shamir's x byte, or the bare key for 1 share."""
        assert self.config is not None
        return KEY_BYTES if self.config.secret_shares == 1 else KEY_BYTES + 1

    async def initialize(self, shares: int, threshold: int) -> InitResult:
        """Create every key and leave the barrier *unlocked* so the caller can write the
        first tables and the root token, then :meth:`commit` and seal again."""
        if self.config is not None:
            raise SecretsError(400, "Vault is already initialized")
        try:
            shamir.validate(shares, threshold)
        except ValueError as exc:
            raise SecretsError(400, str(exc)) from None
        unseal_key = secrets.token_bytes(KEY_BYTES)
        keyring = Keyring.new(secrets.token_bytes(KEY_BYTES))
        try:
            version = await self._barrier.initialize(unseal_key, keyring)
        except ConflictError:
            raise SecretsError(400, "Vault is already initialized") from None
        self._barrier.unlock_with(keyring, version)
        return InitResult(
            shamir.split(unseal_key, shares, threshold), keyring, SealConfig(shares, threshold)
        )

    async def commit(self, result: InitResult) -> None:
        """The last step of ``sys/init``: from here on the store is initialised."""
        try:
            await self._barrier.commit_seal_config(result.config.to_dict())
        except ConflictError:
            raise SecretsError(400, "Vault is already initialized") from None
        self.config = result.config

    def reset(self) -> None:
        self._quorum = None
        self._nonce = ""

    async def submit(self, share: bytes) -> bool:
        """Add a share; unlock the barrier once the threshold is reached.

        A share already given is ignored (progress does not move), as in Vault. A wrong
        combination resets the progress and answers 400.
        """
        if self.config is None:
            raise SecretsError(400, "Vault is not initialized")
        if not self._barrier.sealed:
            return True
        if self._quorum is None:
            self._quorum = ShareQuorum(self.config.secret_threshold)
            self._nonce = str(uuid.uuid4())
        if not self._quorum.add(share):
            return False
        quorum, self._quorum = self._quorum, None
        self._nonce = ""
        # Shares of another split can repeat an x coordinate (1 in 255 per pair): that is a
        # wrong combination like any other, not a different error.
        try:
            key = quorum.take_key()
            await self._barrier.unlock(key)
        except (ValueError, InvalidUnsealKey):
            raise SecretsError(
                400, "the unseal key shares are wrong: progress was reset, start again"
            ) from None
        return True

    def status(self) -> dict[str, object]:
        """``sys/seal-status`` (and the body of ``sys/unseal``)."""
        config = self.config
        return {
            "type": "shamir",
            "initialized": config is not None,
            "sealed": self._barrier.sealed,
            "t": config.secret_threshold if config else 0,
            "n": config.secret_shares if config else 0,
            "progress": self._quorum.progress if self._quorum else 0,
            "nonce": self._nonce,
            "version": __version__,
            "commit_date": BUILD_DATE,
            "migration": False,
            "recovery_seal": False,
            "storage_type": "socle",
        }
