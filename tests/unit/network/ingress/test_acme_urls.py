"""The ACME client follows https URLs only: a Route names the directory, and a hostile
ACME server names every other URL (nonce, account, order, challenge). Plain http would let
either aim the control plane at a metadata service or a loopback API and show the answer
in the route's error. The server here is an in-memory httpx transport that records what
reached it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from socle.network.ingress.acme import AcmeCertificates, AcmeClient, AcmeError

DIRECTORY = "https://acme.test/dir"


def hostile(seen: list[str], listed: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if str(request.url) == DIRECTORY:
            return httpx.Response(
                200,
                json={"newNonce": listed, "newAccount": listed, "newOrder": listed},
            )
        return httpx.Response(200, headers={"Replay-Nonce": "n", "Location": listed}, json={})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    "listed",
    ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8500/v1/kv/x", "file:///x"],
)
async def test_urls_the_server_lists_must_be_https(listed: str) -> None:
    seen: list[str] = []
    client = AcmeClient(
        DIRECTORY, ec.generate_private_key(ec.SECP256R1()), transport=hostile(seen, listed)
    )
    try:
        with pytest.raises(AcmeError, match="not https"):
            await client.account()
    finally:
        await client.close()
    assert seen == [DIRECTORY], "nothing but the directory was asked"


def test_a_plain_http_directory_is_refused() -> None:
    with pytest.raises(AcmeError, match="not https"):
        AcmeClient("http://169.254.169.254/dir", ec.generate_private_key(ec.SECP256R1()))


def test_challenge_tokens_are_base64url(tmp_path: Path) -> None:
    folder = tmp_path
    certs = AcmeCertificates(folder / "acme", folder / "certs", folder / "ch", changed=lambda: None)
    for token in ("../../etc/x", "a/b", "\uff41\uff42", "", "a.b"):
        with pytest.raises(AcmeError, match="base64url"):
            certs._publish(token, "x")
        certs._withdraw(token)  # never reaches outside the challenge folder
    certs._publish("tok-EN_1", "tok-EN_1.thumb")
    served = folder / "ch" / ".well-known" / "acme-challenge" / "tok-EN_1"
    assert served.read_text() == "tok-EN_1.thumb"
    assert served.stat().st_mode & 0o777 == 0o600
