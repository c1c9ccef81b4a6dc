"""ACME HTTP-01 against a real pebble (Let's Encrypt's test CA): the CA validates the
challenge through the ingress port itself (no PEBBLE_VA_ALWAYS_VALID), the route is then
served over TLS, and the certificate is renewed once two thirds of its lifetime passed."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from socle.model.route import Route
from socle.network.ingress import AppPorts, Ingress, Listen, Nginx
from socle.network.ingress.acme import AcmeCertificates
from socle.network.ingress.credentials import RouteCredentials, describe
from socle.network.ingress.nginx import NGINX, worker_user
from tests.integration.network.ingress.test_nginx_ingress import Backend, Endpoints
from tests.support.certs import write_self_signed
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(
    not (Path(NGINX).exists() and shutil.which("pebble") and shutil.which("pebble-challtestsrv")),
    reason="nginx and pebble are needed",
)


def tls_for_pebble(folder: Path) -> Path:
    """A throwaway certificate for pebble's own HTTPS listener (and the file to trust)."""
    write_self_signed(folder / "cert.pem", folder / "key.pem", "127.0.0.1")
    return folder / "cert.pem"


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(400):
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        import time

        time.sleep(0.05)
    raise AssertionError(f"{what} does not listen")


class Pebble:
    def __init__(self, folder: Path, http_port: int) -> None:
        folder.mkdir()
        self.ca = tls_for_pebble(folder)
        self.port = free_port()
        dns = free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{free_port()}",
                "certificate": str(folder / "cert.pem"),
                "privateKey": str(folder / "key.pem"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (folder / "pebble.json").write_text(json.dumps(config))
        # Answers every A query with 127.0.0.1 (no AAAA): the CA then connects to the
        # ingress port on loopback for the HTTP-01 validation, as it would on the internet.
        self.dns = subprocess.Popen(
            [
                "pebble-challtestsrv",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                f"127.0.0.1:{dns}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{free_port()}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._log_file = open(folder / "pebble.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["pebble", "-config", str(folder / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
            env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, self.proc, "pebble")
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        self.log = folder / "pebble.log"

    def root(self) -> str:
        """Pebble's issuing root (random at each start), to check served chains against."""
        mgmt = json.loads((self.log.parent / "pebble.json").read_text())["pebble"]
        url = f"https://{mgmt['managementListenAddress']}/roots/0"
        return httpx.get(url, verify=ssl.create_default_context(cafile=self.ca), timeout=10).text

    def stop(self) -> None:
        for proc in (self.proc, self.dns):
            proc.terminate()
            proc.wait(10)
        self._log_file.close()


@pytest.fixture
def pebble_ingress(tmp_path: Path) -> Iterator[tuple[Pebble, Listen, Path]]:
    # The workers (an unprivileged user under root) read challenge files from their own
    # folder, which must not sit below pytest's owner-only tmp folders.
    temp = Path(tempfile.mkdtemp(prefix="socle-acme-test-"))
    listen = Listen(
        http=("127.0.0.1", free_port()),
        https=("127.0.0.1", free_port()),
        prefix=tmp_path / "home" / "ingress",
        temp=temp,
        user=worker_user(),
        acme_root=temp / "acme",
    )
    pebble = Pebble(tmp_path / "pebble", listen.http[1])
    yield pebble, listen, tmp_path
    pebble.stop()
    Nginx(listen.prefix, temp=listen.temp).stop()
    shutil.rmtree(temp, ignore_errors=True)


async def test_acme_certificate_issued_served_and_renewed(
    pebble_ingress: tuple[Pebble, Listen, Path],
) -> None:
    pebble, listen, tmp = pebble_ingress
    backend = Backend("shop")
    try:
        endpoints = Endpoints()
        endpoints.set(backend.endpoint("web", "web-0"))
        host = "shop.example.test"
        route = Route.model_validate(
            {
                "apiVersion": "socle/v1",
                "kind": "Route",
                "metadata": {"name": "shop"},
                "spec": {
                    "host": host,
                    "target": {"app": "web", "port": "http"},
                    "tls": {"acme": {"directory": pebble.directory, "email": "ops@example.test"}},
                },
            }
        )
        offset = [0.0]

        def clock() -> float:
            return datetime.datetime.now(datetime.UTC).timestamp() + offset[0]

        owner = None
        if listen.user:
            import pwd

            owner = pwd.getpwnam(listen.user.split()[0]).pw_uid
        assert listen.acme_root is not None
        acme = AcmeCertificates(
            listen.prefix / "acme",
            listen.prefix / "certs",
            listen.acme_root,
            changed=lambda: None,
            verify=str(pebble.ca),
            challenge_owner=owner,
            clock=clock,
        )
        credentials = RouteCredentials(
            None, listen.prefix / "certs", listen.temp, acme=acme, clock=clock
        )
        ingress = Ingress(
            Nginx(listen.prefix, temp=listen.temp),
            listen,
            endpoints,
            routes=lambda: {"shop": route},
            apps=lambda: [AppPorts("web", "default", ("http",))],
            extras=credentials,
        )
        acme.set_changed(ingress.changed)
        await ingress.start()
        try:
            row = next(r for r in ingress.view()["routes"] if r["name"] == "shop")
            assert "waiting for the ACME certificate" in (row["error"] or "")
            for _ in range(600):
                if acme.issued:
                    break
                await asyncio.sleep(0.1)
            assert acme.issued == 1, (acme._errors, pebble.log.read_text()[-3000:])
            await ingress.sync()

            bundle = tmp / "pebble-root.pem"
            bundle.write_text(pebble.root())
            context = ssl.create_default_context(cafile=str(bundle))

            def fetch() -> tuple[str, bytes]:
                address = ("127.0.0.1", listen.https[1])
                with (
                    socket.create_connection(address, timeout=10) as raw,
                    context.wrap_socket(raw, server_hostname=host) as tls,
                ):
                    tls.sendall(
                        f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                    )
                    data = b""
                    while chunk := tls.recv(65536):
                        data += chunk
                    der = tls.getpeercert(binary_form=True)
                assert der is not None
                return data.decode(errors="replace"), der

            answer, der = await asyncio.to_thread(fetch)
            assert answer.startswith("HTTP/1.1 200") and answer.endswith("shop"), answer
            first = x509.load_der_x509_certificate(der)
            row = next(r for r in ingress.view()["routes"] if r["name"] == "shop")
            assert row["error"] is None and row["certificate"]["acme"] is True

            # Two thirds of its lifetime later, a new certificate replaces it.
            not_before, not_after, _ = describe((listen.prefix / "certs" / "shop.crt").read_bytes())
            offset[0] = not_before + (not_after - not_before) * 0.7 - clock() + offset[0]
            await ingress.sync()  # keeps serving the old one and starts the renewal
            for _ in range(600):
                if acme.issued >= 2:
                    break
                await asyncio.sleep(0.1)
            # Back to the real clock at once: under the shifted one every new certificate
            # is itself due (issued "now", judged 70 % of a lifetime later), so renewals
            # follow each other until then; counting an exact 2 could miss the moment.
            offset[0] = 0.0
            assert acme.issued >= 2, pebble.log.read_text()[-2000:]
            await ingress.sync()
            for _ in range(100):
                _, der = await asyncio.to_thread(fetch)
                if x509.load_der_x509_certificate(der).serial_number != first.serial_number:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the renewed certificate is not served")
        finally:
            await acme.close()
            await ingress.stop(stop_nginx=True)
    finally:
        backend.server.shutdown()
        backend.server.server_close()
