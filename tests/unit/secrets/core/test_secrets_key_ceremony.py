"""The pure parts of generate-root, rekey and unseal: the OTP encoding and share quorums."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import pytest

from socle.secrets.backend import SecretsError
from socle.secrets.core import shamir
from socle.secrets.core.barrier import Barrier
from socle.secrets.core.key_ceremony import (
    OTP_LENGTH,
    Rekey,
    RootGeneration,
    xor_decode,
    xor_encode,
)
from socle.secrets.core.seal import SealConfig, SealManager, ShareQuorum
from socle.secrets.core.services import Services

# Recorded from a real OpenBao 2.x: `operator generate-root` answered this encoded token for
# this pad, and `operator generate-root -decode` printed this token.
OPENBAO_ENCODED = "HUsDLhobKRcZAjc4CRoMEg0QdxZLIBcdEQE"
OPENBAO_OTP = "neVtLCJmJtaJnKht5QOpyhVKG3"
OPENBAO_TOKEN = "s.UZVXczSvVrgQdf8A8f2HAVV2"


def test_xor_encoding_is_openbaos() -> None:
    assert xor_encode(OPENBAO_TOKEN, OPENBAO_OTP) == OPENBAO_ENCODED  # base64, no padding
    assert xor_decode(OPENBAO_ENCODED, OPENBAO_OTP) == OPENBAO_TOKEN


def test_xor_round_trip_at_socle_length() -> None:
    token = "hvs." + "A1b2" * 8
    otp = "z" * OTP_LENGTH
    assert len(token) == OTP_LENGTH
    assert xor_decode(xor_encode(token, otp), otp) == token
    with pytest.raises(SecretsError):
        xor_encode(token, otp[:-1])


def test_quorum_ignores_repeats_and_combines() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, 5, 3)
    quorum = ShareQuorum(3)
    assert quorum.add(shares[0]) is False
    assert quorum.add(shares[0]) is False and quorum.progress == 1
    assert quorum.add(shares[3]) is False
    assert quorum.add(shares[4]) is True
    assert quorum.take_key() == secret and quorum.progress == 0


def test_single_share_quorum_is_the_key() -> None:
    quorum = ShareQuorum(1)
    assert quorum.add(b"k" * 32) is True
    assert quorum.take_key() == b"k" * 32


class SlowBarrier:
    """Checks a key only when told to: lets a test act while the last share is checked."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.checking = asyncio.Event()
        self.rekeyed: list[bytes] = []

    async def check_unseal_key(self, key: bytes) -> bool:
        self.checking.set()
        await self.go.wait()
        return True

    async def rekey(self, key: bytes, config: dict[str, int]) -> None:
        self.rekeyed.append(key)


class Minted:
    def __init__(self) -> None:
        self.count = 0

    async def create(self, params: object, parent: object) -> tuple[str, None, None]:
        self.count += 1
        return "hvs." + "x" * 32, None, None


def _seal() -> SealManager:
    seal = SealManager(cast(Barrier, None))
    seal.config = SealConfig(1, 1)
    return seal


async def test_a_root_generation_cancelled_during_its_last_check_mints_nothing() -> None:
    barrier, minted = SlowBarrier(), Minted()
    generation = RootGeneration(_seal(), cast(Barrier, barrier), asyncio.Lock())
    services = cast(Services, SimpleNamespace(tokens=minted))
    nonce = generation.start("", "")["nonce"]
    update = asyncio.create_task(generation.update((b"k" * 32).hex(), nonce, services))
    await barrier.checking.wait()
    generation.cancel()  # DELETE sys/generate-root/attempt (or a seal) meanwhile
    barrier.go.set()
    with pytest.raises(SecretsError, match="cancelled"):
        await update
    assert minted.count == 0
    # Completing normally still works, and the pad is the attempt's own.
    attempt = generation.start("", "")
    done = await generation.update((b"k" * 32).hex(), attempt["nonce"], services)
    assert done["complete"] and xor_decode(done["encoded_token"], attempt["otp"]).startswith("hvs.")


async def test_a_rekey_cancelled_during_its_last_check_changes_no_key() -> None:
    barrier = SlowBarrier()
    seal = _seal()
    rekey = Rekey(seal, cast(Barrier, barrier), asyncio.Lock())
    nonce = rekey.start(3, 2, pgp=False, backup=False, verify=False)["nonce"]
    update = asyncio.create_task(rekey.update((b"k" * 32).hex(), nonce))
    await barrier.checking.wait()
    rekey.cancel()
    barrier.go.set()
    with pytest.raises(SecretsError, match="cancelled"):
        await update
    assert barrier.rekeyed == [] and seal.config == SealConfig(1, 1)


@pytest.mark.parametrize("otp", ["é" * OTP_LENGTH, "a" * (OTP_LENGTH - 1), "a" * (OTP_LENGTH + 1)])
def test_an_otp_that_cannot_pad_the_token_is_refused_at_start(otp: str) -> None:
    generation = RootGeneration(_seal(), cast(Barrier, SlowBarrier()), asyncio.Lock())
    with pytest.raises(SecretsError, match="OTP"):
        generation.start(otp, "")
    assert generation.status()["started"] is False
