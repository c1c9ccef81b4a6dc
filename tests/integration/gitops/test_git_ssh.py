"""The real ``git`` over real SSH: a loopback ``sshd`` started by the test (its own host
key, config and port), the client key handed to git as a 0600 file, never in argv."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from socle.errors import SourceError
from socle.gitops.git import Credentials, Mirror
from tests.e2e.gitops_repo import Remote
from tests.e2e.socle_fixture import wait_for
from tests.support.ports import free_port

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path.read_text()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A loopback sshd accepting one client key for root; yields (port, private key)."""
    if os.geteuid() != 0 or not Path(SSHD).exists() or shutil.which("git-upload-pack") is None:
        pytest.skip("needs root, sshd and git-upload-pack")
    folder = tmp_path / "sshd"
    folder.mkdir(mode=0o700)
    keygen(folder / "host")
    client_key = keygen(folder / "client")
    authorized = folder / "authorized_keys"
    authorized.write_text((folder / "client.pub").read_text())
    authorized.chmod(0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"PidFile {folder / 'sshd.pid'}\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\n"
    )
    with open(folder / "sshd.log", "wb") as log:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        import socket

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 20, "sshd")
        yield port, client_key
    finally:
        proc.kill()
        proc.wait(10)


def test_fetch_over_ssh_with_a_key_from_the_caller(sshd: tuple[int, str], tmp_path: Path) -> None:
    port, key = sshd
    remote = Remote(tmp_path / "git")
    sha = remote.commit_apps("over ssh", {"web": {}})
    url = f"ssh://root@127.0.0.1:{port}{remote.bare}"
    with pytest.raises(SourceError, match="git fetch failed"):
        Mirror(tmp_path / "nokey", url).fetch()
    mirror = Mirror(tmp_path / "m", url, Credentials(ssh_key=key))
    mirror.fetch()
    assert mirror.resolve("main", None) == sha
    assert mirror.commit(sha).message == "over ssh"
    leftovers = [p for p in Path("/tmp").glob("socle-ssh-*")]
    assert not leftovers, "the key file is removed after each command"
