"""The pure parts of generate-root, rekey and unseal: the OTP encoding and share quorums."""

from __future__ import annotations

import pytest

from socle.secrets.backend import SecretsError
from socle.secrets.core import shamir
from socle.secrets.core.key_ceremony import OTP_LENGTH, xor_decode, xor_encode
from socle.secrets.core.seal import ShareQuorum

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
