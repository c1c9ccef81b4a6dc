"""Signed commits checked with the real ``git verify-commit``: real GPG keys (made by
``gpg --quick-gen-key`` in a private keyring) and real SSH keys (``ssh-keygen``); good,
unsigned, tampered and foreign-key commits."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from socle.errors import SourceError
from socle.gitops.git import Mirror
from tests.e2e.gitops_repo import GIT_ENV, Remote, git

pytestmark = pytest.mark.skipif(
    shutil.which("gpg") is None or shutil.which("ssh-keygen") is None, reason="needs gpg, ssh"
)


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        list(args), env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


@dataclass
class GpgKey:
    home: Path
    fingerprint: str
    public: str


@dataclass
class SshKey:
    private: Path
    signer: str
    """Its allowed_signers line."""


def make_gpg(home: Path, uid: str) -> GpgKey:
    home.mkdir(mode=0o700, parents=True)
    env = {"GNUPGHOME": str(home)}
    run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never",
        env=env)  # fmt: skip
    listing = run("gpg", "--batch", "--with-colons", "--list-keys", env=env)
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    public = run("gpg", "--batch", "--armor", "--export", fpr, env=env)
    return GpgKey(home, fpr, public)


def make_ssh(folder: Path, principal: str) -> SshKey:
    folder.mkdir(parents=True)
    key = folder / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", str(key))
    pub = (folder / "id_ed25519.pub").read_text().split()
    return SshKey(key, f"{principal} {pub[0]} {pub[1]}")


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[GpgKey, GpgKey, SshKey, SshKey]]:
    good = make_gpg(tmp_path / "gpg-good", "Release <release@example.com>")
    other = make_gpg(tmp_path / "gpg-other", "Mallory <mallory@example.com>")
    try:
        yield (
            good,
            other,
            make_ssh(tmp_path / "ssh-good", "dev@example.com"),
            make_ssh(tmp_path / "ssh-other", "mallory@example.com"),
        )
    finally:
        for home in (good.home, other.home):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def commit_gpg(remote: Remote, key: GpgKey, message: str) -> str:
    env = {**GIT_ENV, "GNUPGHOME": str(key.home)}
    (remote.work / "deploy").mkdir(exist_ok=True)
    (remote.work / "deploy" / "note.txt").write_text(message + "\n")
    git(remote.work, "add", "-A")
    run("git", "-c", f"user.signingkey={key.fingerprint}", "commit", "--quiet", "-S", "-m",
        message, env=env, cwd=remote.work)  # fmt: skip
    git(remote.work, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")
    return git(remote.work, "rev-parse", "HEAD")


def commit_ssh(remote: Remote, key: SshKey, message: str) -> str:
    (remote.work / "deploy").mkdir(exist_ok=True)
    (remote.work / "deploy" / "note.txt").write_text(message + "\n")
    git(remote.work, "add", "-A")
    git(remote.work, "-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}",
        "commit", "--quiet", "-S", "-m", message)  # fmt: skip
    git(remote.work, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")
    return git(remote.work, "rev-parse", "HEAD")


def tamper(remote: Remote, sha: str) -> str:
    """The same signed commit with another message: the signature no longer matches."""
    raw = run("git", "cat-file", "commit", sha, cwd=remote.work, env=GIT_ENV)
    forged = raw.replace("\n\nrelease", "\n\nrelease (forged)") + "\n"
    done = subprocess.run(
        ["git", "hash-object", "-t", "commit", "-w", "--stdin"], input=forged, text=True,
        cwd=remote.work, capture_output=True, check=True, env={**os.environ, **GIT_ENV},
    )  # fmt: skip
    new = done.stdout.strip()
    git(remote.work, "push", "--quiet", "--force", "origin", f"{new}:refs/heads/main")
    return new


def test_gpg_signed_commits(tmp_path: Path, keys: tuple[GpgKey, GpgKey, SshKey, SshKey]) -> None:
    good, other, _, _ = keys
    remote = Remote(tmp_path / "git")
    mirror = Mirror(tmp_path / "m", remote.url)
    listed = [good.public]
    work = tmp_path / "verify"

    signed = commit_gpg(remote, good, "release")
    mirror.fetch()
    assert "Release <release@example.com>" in mirror.verify_signature(signed, listed, [], work)
    assert not work.exists()  # the private keyring is rebuilt for every check

    tampered = tamper(remote, signed)
    mirror.fetch()
    with pytest.raises(SourceError, match="bad signature"):
        mirror.verify_signature(tampered, listed, [], work)

    foreign = commit_gpg(remote, other, "sneaky")
    mirror.fetch()
    with pytest.raises(SourceError, match="not listed"):
        mirror.verify_signature(foreign, listed, [], work)
    # the same commit passes once its key is listed: the keyring holds exactly the list
    mirror.verify_signature(foreign, [good.public, other.public], [], work)

    unsigned = remote.commit("unsigned")
    mirror.fetch()
    with pytest.raises(SourceError, match="is not signed"):
        mirror.verify_signature(unsigned, listed, [], work)


def test_ssh_signed_commits(tmp_path: Path, keys: tuple[GpgKey, GpgKey, SshKey, SshKey]) -> None:
    good_gpg, _, good, other = keys
    remote = Remote(tmp_path / "git")
    mirror = Mirror(tmp_path / "m", remote.url)
    work = tmp_path / "verify"

    signed = commit_ssh(remote, good, "release")
    mirror.fetch()
    assert "dev@example.com" in mirror.verify_signature(signed, [], [good.signer], work)
    with pytest.raises(SourceError, match="signed by an SSH key that is not listed"):
        mirror.verify_signature(signed, [good_gpg.public], [], work)

    tampered = tamper(remote, signed)
    mirror.fetch()
    with pytest.raises(SourceError, match="bad SSH signature"):
        mirror.verify_signature(tampered, [], [good.signer], work)

    foreign = commit_ssh(remote, other, "sneaky")
    mirror.fetch()
    with pytest.raises(SourceError, match="signed by an SSH key that is not listed"):
        mirror.verify_signature(foreign, [], [good.signer], work)
    mirror.verify_signature(foreign, [], [good.signer, other.signer], work)
