"""Shamir over GF(256): any threshold subset recombines, fewer shares do not."""

from __future__ import annotations

import itertools
import random
import secrets

import pytest

from socle.secrets.core import shamir


@pytest.mark.parametrize(("shares", "threshold"), [(5, 3), (3, 2), (2, 2), (7, 7), (10, 4)])
def test_every_threshold_subset_recombines(shares: int, threshold: int) -> None:
    secret = secrets.token_bytes(32)
    parts = shamir.split(secret, shares, threshold)
    assert len(parts) == shares and all(len(p) == 33 for p in parts)
    for subset in itertools.combinations(parts, threshold):
        assert shamir.combine(list(subset)) == secret
    for subset in itertools.permutations(parts, threshold):
        assert shamir.combine(list(subset)) == secret
        break  # order does not matter; one permutation is enough beyond combinations


def test_more_than_threshold_also_recombines() -> None:
    secret = secrets.token_bytes(32)
    parts = shamir.split(secret, 5, 3)
    assert shamir.combine(parts) == secret
    assert shamir.combine(parts[1:]) == secret


def test_fewer_shares_do_not_reveal_the_secret() -> None:
    secret = secrets.token_bytes(32)
    parts = shamir.split(secret, 5, 3)
    for subset in itertools.combinations(parts, 2):
        recovered = shamir.combine(list(subset))
        assert recovered != secret
        assert len(recovered) == len(secret)


def test_single_share_is_the_key_itself() -> None:
    secret = secrets.token_bytes(32)
    assert shamir.split(secret, 1, 1) == [secret]


def test_shares_differ_between_splits() -> None:
    secret = secrets.token_bytes(32)
    assert shamir.split(secret, 5, 3) != shamir.split(secret, 5, 3)


@pytest.mark.parametrize(
    ("shares", "threshold", "message"),
    [
        (0, 1, "secret_shares"),
        (256, 3, "secret_shares"),
        (3, 4, "secret_threshold"),
        (3, 0, "secret_threshold"),
        (5, 1, "greater than one"),
    ],
)
def test_invalid_configurations_are_refused(shares: int, threshold: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shamir.split(b"x" * 32, shares, threshold)


def test_combine_refuses_bad_inputs() -> None:
    parts = shamir.split(b"k" * 32, 3, 2)
    with pytest.raises(ValueError, match="at least two"):
        shamir.combine(parts[:1])
    with pytest.raises(ValueError, match="duplicate"):
        shamir.combine([parts[0], parts[0]])
    with pytest.raises(ValueError, match="same length"):
        shamir.combine([parts[0], parts[1][:-2] + parts[1][-1:]])


def test_property_random_secrets_and_subsets() -> None:
    """A deterministic property test (hypothesis is not a dependency): many random secrets,
    sizes and subsets."""
    rng = random.Random(20240611)
    for _ in range(200):
        length = rng.randint(1, 64)
        secret = bytes(rng.getrandbits(8) for _ in range(length))
        shares = rng.randint(2, 12)
        threshold = rng.randint(2, shares)
        parts = shamir.split(secret, shares, threshold)
        subset = rng.sample(parts, rng.randint(threshold, shares))
        assert shamir.combine(subset) == secret
        if threshold > 2:
            assert shamir.combine(rng.sample(parts, threshold - 1)) != secret or length < 4


def test_gf256_field_axioms() -> None:
    for a in range(1, 256):
        assert shamir._mul(a, shamir._div(1, a)) == 1
        assert shamir._mul(a, 1) == a
    rng = random.Random(7)
    for _ in range(500):
        a, b, c = rng.randrange(256), rng.randrange(256), rng.randrange(256)
        assert shamir._mul(a, b ^ c) == shamir._mul(a, b) ^ shamir._mul(a, c)
        assert shamir._mul(a, b) == shamir._mul(b, a)


def test_shares_of_two_splits_with_the_same_x_are_refused_as_duplicates() -> None:
    """Shares of different splits may carry the same x coordinate; combine says so."""
    first = shamir.split(b"a" * 32, 3, 2)
    second = shamir.split(b"b" * 32, 3, 2)
    foreign = second[0][:-1] + first[0][-1:]  # a share of the other split, same x as first[0]
    with pytest.raises(ValueError, match="duplicate"):
        shamir.combine([first[0], foreign])
