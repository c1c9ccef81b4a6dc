"""Operations that need a quorum of unseal key shares: generate-root and rekey.

**generate-root** makes a new root token when none is left (Vault's break-glass): an operator
starts an attempt and gets a one-time pad (OTP), key holders submit their shares with the
attempt's nonce, and once the threshold is reached and the shares prove themselves (they open
the stored root key), a root token is created and answered only XOR-ed with the OTP and
base64-encoded without padding (``encoded_token``), exactly as Vault and OpenBao encode it, so
``bao operator generate-root -decode=ENCODED -otp=OTP`` prints the token. The OTP is as long
as a token (``otp_length``); it is shown once, in the answer that starts the attempt, and the
server keeps it only in memory until the attempt completes or is cancelled.

**rekey** replaces the unseal key shares (new ``secret_shares``/``secret_threshold``): key
holders submit shares of the *current* key with the nonce; once they prove themselves, a new
unseal key is drawn, split, and the root key re-wrapped with it in one commit with the new
seal configuration (see :meth:`Barrier.rekey`). Data is not re-encrypted, so
``sys/key-status`` (the data key term) does not change. ``backup`` (storing PGP-encrypted
shares) and PGP keys are refused: Socle never stores shares.

Both keep their progress in memory only, like unseal progress: a restart or seal forgets it.
A wrong combination of shares resets the progress and says so. An attempt cancelled (or
sealed away) while its last share is being checked does not complete: no root token is minted
and the root key is not re-wrapped for an attempt the operators called off.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import string
import uuid
from typing import Any

from socle.secrets.backend import SecretsError
from socle.secrets.core import shamir
from socle.secrets.core.barrier import Barrier
from socle.secrets.core.keyring import KEY_BYTES
from socle.secrets.core.seal import SealConfig, SealManager, ShareQuorum, decode_share
from socle.secrets.core.services import Services
from socle.secrets.core.tokens import TOKEN_PREFIX, TokenParams

OTP_LENGTH = len(TOKEN_PREFIX) + 32
"""A root token's length (``hvs.`` + 32 characters): the pad must cover it exactly."""
_BASE62 = string.ascii_letters + string.digits
_WRONG_SHARES = "the key shares are wrong: progress was reset, start again"
_CANCELLED = "the attempt was cancelled while its shares were checked: start again"


def xor_encode(token: str, otp: str) -> str:
    """Vault's encoding: ``base64.RawStdEncoding(token XOR otp)``."""
    raw, pad = token.encode(), otp.encode()
    if len(raw) != len(pad):
        raise SecretsError(500, "the one-time pad does not match the token length")
    return (
        base64.b64encode(bytes(a ^ b for a, b in zip(raw, pad, strict=True))).decode().rstrip("=")
    )


def xor_decode(encoded: str, otp: str) -> str:
    """The inverse of :func:`xor_encode` (what ``operator generate-root -decode`` does)."""
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    return bytes(a ^ b for a, b in zip(raw, otp.encode(), strict=True)).decode()


def _nonce_check(given: str, expected: str, what: str) -> None:
    if not given:
        raise SecretsError(400, "nonce is required")
    if given != expected:
        raise SecretsError(
            400, f"incorrect nonce supplied; nonce for this {what} operation is {expected!r}"
        )


class RootGeneration:
    def __init__(self, seal: SealManager, barrier: Barrier, lock: asyncio.Lock) -> None:
        self._seal = seal
        self._barrier = barrier
        self._lock = lock
        self._nonce = ""
        self._otp = ""
        self._quorum: ShareQuorum | None = None

    def _required(self) -> int:
        return self._seal.config.secret_threshold if self._seal.config else 0

    def status(self) -> dict[str, Any]:
        """Vault's ``sys/generate-root/attempt`` answer (the OTP is never repeated)."""
        return {
            "started": self._quorum is not None,
            "nonce": self._nonce,
            "progress": self._quorum.progress if self._quorum else 0,
            "required": self._required(),
            "encoded_token": "",
            "encoded_root_token": "",
            "pgp_fingerprint": "",
            "otp_length": OTP_LENGTH,
            "otp": "",
            "complete": False,
        }

    def start(self, otp: str, pgp_key: str) -> dict[str, Any]:
        if pgp_key:
            raise SecretsError(400, "PGP-encrypted root tokens are not supported; use the OTP")
        if self._quorum is not None:
            raise SecretsError(400, "root generation already in progress")
        if otp and len(otp) != OTP_LENGTH:
            raise SecretsError(400, "OTP string has incorrect length")
        if not otp.isascii():
            # Bytes, not characters, are XOR-ed: a non-ASCII pad is longer than the token
            # and would fail only after the root token was made.
            raise SecretsError(400, "OTP string must be ASCII")
        generated = not otp
        if generated:
            otp = "".join(secrets.choice(_BASE62) for _ in range(OTP_LENGTH))
        self._otp, self._nonce = otp, str(uuid.uuid4())
        self._quorum = ShareQuorum(self._required())
        status = self.status()
        if generated:
            status["otp"] = otp  # shown once, here
        return status

    def cancel(self) -> None:
        self._quorum, self._nonce, self._otp = None, "", ""

    async def update(self, key: str, nonce: str, services: Services) -> dict[str, Any]:
        async with self._lock:
            quorum = self._quorum
            if quorum is None:
                raise SecretsError(400, "no root generation in progress")
            _nonce_check(nonce, self._nonce, "root generation")
            if not key:
                raise SecretsError(400, "'key' must be specified in request body as JSON")
            if not quorum.add(decode_share(key, self._seal.share_bytes)):
                return self.status()
            try:
                unseal_key = quorum.take_key()
            except ValueError:
                unseal_key = b""
            otp = self._otp
            if len(unseal_key) != KEY_BYTES or not await self._barrier.check_unseal_key(unseal_key):
                raise SecretsError(400, _WRONG_SHARES)
            if self._quorum is not quorum:  # cancelled (or sealed) during the check
                raise SecretsError(400, _CANCELLED)
            status = self.status()
            token, _, _ = await services.tokens.create(
                TokenParams(policies=["root"], display_name="root", path="auth/token/root"),
                None,
            )
            encoded = xor_encode(token, otp)
            status.update(
                complete=True,
                progress=status["required"],
                encoded_token=encoded,
                encoded_root_token=encoded,
            )
            if self._quorum is quorum:  # not a new attempt started meanwhile
                self.cancel()
            return status


class Rekey:
    def __init__(self, seal: SealManager, barrier: Barrier, lock: asyncio.Lock) -> None:
        self._seal = seal
        self._barrier = barrier
        self._lock = lock
        self._nonce = ""
        self._new: SealConfig | None = None
        self._quorum: ShareQuorum | None = None

    def status(self) -> dict[str, Any]:
        """Vault's ``sys/rekey/init`` answer."""
        new = self._new
        return {
            "nonce": self._nonce,
            "started": new is not None,
            "t": new.secret_threshold if new else 0,
            "n": new.secret_shares if new else 0,
            "progress": self._quorum.progress if self._quorum else 0,
            "required": self._seal.config.secret_threshold if self._seal.config else 0,
            "pgp_fingerprints": None,
            "backup": False,
            "verification_required": False,
        }

    def start(
        self, shares: int, threshold: int, *, pgp: bool, backup: bool, verify: bool
    ) -> dict[str, Any]:
        if pgp:
            raise SecretsError(400, "PGP-encrypted key shares are not supported")
        if backup:
            raise SecretsError(
                400, "backup of rekeyed shares is not supported (Socle never stores shares)"
            )
        if verify:
            raise SecretsError(400, "require_verification is not supported")
        if self._new is not None:
            raise SecretsError(400, "rekey already in progress")
        try:
            shamir.validate(shares, threshold)
        except ValueError as exc:
            raise SecretsError(400, str(exc)) from None
        assert self._seal.config is not None
        self._new = SealConfig(shares, threshold)
        self._nonce = str(uuid.uuid4())
        self._quorum = ShareQuorum(self._seal.config.secret_threshold)
        return self.status()

    def cancel(self) -> None:
        self._new, self._quorum, self._nonce = None, None, ""

    async def update(self, key: str, nonce: str) -> dict[str, Any]:
        async with self._lock:
            quorum, new = self._quorum, self._new
            if quorum is None or new is None:
                raise SecretsError(400, "no rekey in progress")
            _nonce_check(nonce, self._nonce, "rekey")
            if not key:
                raise SecretsError(400, "'key' must be specified in request body as JSON")
            if not quorum.add(decode_share(key, self._seal.share_bytes)):
                status = self.status()
                return {
                    k: status[k] for k in ("nonce", "started", "t", "n", "progress", "required")
                } | {
                    "complete": False,
                    "pgp_fingerprints": None,
                    "backup": False,
                    "verification_required": False,
                }
            try:
                old_key = quorum.take_key()
            except ValueError:
                old_key = b""
            if len(old_key) != KEY_BYTES or not await self._barrier.check_unseal_key(old_key):
                raise SecretsError(400, _WRONG_SHARES)
            if self._quorum is not quorum:  # cancelled (or sealed) during the check
                raise SecretsError(400, _CANCELLED)
            new_key = secrets.token_bytes(KEY_BYTES)
            shares = shamir.split(new_key, new.secret_shares, new.secret_threshold)
            await self._barrier.rekey(new_key, new.to_dict())
            self._seal.config = new
            nonce = self._nonce
            self.cancel()
            return {
                "complete": True,
                "nonce": nonce,
                "keys": [share.hex() for share in shares],
                "keys_base64": [base64.b64encode(share).decode() for share in shares],
                "pgp_fingerprints": None,
                "backup": False,
                "verification_required": False,
                "verification_nonce": "",
            }


__all__ = ["OTP_LENGTH", "Rekey", "RootGeneration", "xor_decode", "xor_encode"]
