"""Shamir's secret sharing over GF(2^8), the scheme that splits the unseal key.

Each byte of the secret is the constant term of its own random polynomial of degree
``threshold - 1``; a share is the polynomials evaluated at one non-zero ``x``, stored as the
``y`` bytes followed by ``x`` (the layout Vault uses, so share lengths match Vault's: a
32-byte key gives 33-byte shares). Any ``threshold`` shares give the secret back by Lagrange
interpolation at ``x = 0``; fewer give a value that is statistically independent of it.

Arithmetic uses the AES field (reduction polynomial ``x^8 + x^4 + x^3 + x + 1``) through
log/exp tables. Python gives no constant-time guarantees: the tables are indexed by secret
bytes. The unseal flow runs a handful of times per process life, on the server only, which
is the same trade-off as Vault's table-based implementation.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

MAX_SHARES = 255


def _build_tables() -> tuple[list[int], list[int]]:
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        doubled = ((x << 1) ^ 0x11B) if x & 0x80 else (x << 1)
        x = doubled ^ x  # multiply by the generator 3 = x * 2 + x
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    return exp, log


_EXP, _LOG = _build_tables()


def _mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(256)")
    if a == 0:
        return 0
    return _EXP[(_LOG[a] - _LOG[b]) % 255]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """Horner's rule; ``coefficients[0]`` is the constant term."""
    result = 0
    for coefficient in reversed(coefficients):
        result = _mul(result, x) ^ coefficient
    return result


def validate(shares: int, threshold: int) -> None:
    """Vault's rules: 1 <= threshold <= shares <= 255, and a threshold of 1 only with one share
    (splitting into several shares that each reveal the key alone is a mistake)."""
    if not 1 <= shares <= MAX_SHARES:
        raise ValueError(f"secret_shares must be between 1 and {MAX_SHARES}, got {shares}")
    if not 1 <= threshold <= shares:
        raise ValueError(
            f"secret_threshold must be between 1 and secret_shares ({shares}), got {threshold}"
        )
    if threshold == 1 and shares > 1:
        raise ValueError("secret_threshold must be greater than one for multiple shares")


def split(secret: bytes, shares: int, threshold: int) -> list[bytes]:
    """Split ``secret`` into ``shares`` parts, any ``threshold`` of which recombine it."""
    validate(shares, threshold)
    if not secret:
        raise ValueError("cannot split an empty secret")
    if shares == 1:
        return [bytes(secret)]
    xs = secrets.SystemRandom().sample(range(1, 256), shares)
    outputs = [bytearray(len(secret) + 1) for _ in range(shares)]
    for index, x in enumerate(xs):
        outputs[index][-1] = x
    for position, byte in enumerate(secret):
        coefficients = [byte, *secrets.token_bytes(threshold - 1)]
        for index, x in enumerate(xs):
            outputs[index][position] = _evaluate(coefficients, x)
    return [bytes(out) for out in outputs]


def combine(parts: Sequence[bytes]) -> bytes:
    """Recombine shares by Lagrange interpolation at zero.

    With fewer shares than the threshold the result is a wrong key, not an error: nothing in
    a share says what the threshold was. Callers detect a wrong key when it fails to decrypt.
    """
    if len(parts) < 2:
        raise ValueError("at least two shares are needed to recombine")
    length = len(parts[0])
    if length < 2 or any(len(part) != length for part in parts):
        raise ValueError("all shares must have the same length")
    xs = [part[-1] for part in parts]
    if len(set(xs)) != len(xs) or 0 in xs:
        raise ValueError("duplicate or invalid share")
    basis: list[int] = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = _mul(numerator, xj)
                denominator = _mul(denominator, xi ^ xj)
        basis.append(_div(numerator, denominator))
    secret = bytearray(length - 1)
    for position in range(length - 1):
        value = 0
        for i, part in enumerate(parts):
            value ^= _mul(part[position], basis[i])
        secret[position] = value
    return bytes(secret)
