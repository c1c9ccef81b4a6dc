"""Git access through the real ``git``, always as argument lists, credentials only in the
environment of the child process (never in argv, logs or status).

Each source has a bare mirror at ``SOCLE_HOME/gitops/<source>/mirror`` (owner-only),
fetched with ``--prune --force`` so force-pushes and deleted branches are seen as they
are. A sync checks one commit out into a fresh folder with ``git archive`` (a clean tree:
never uncommitted edits, no hooks run, no ``.git`` inside), extracted with the tar
``data`` filter (no absolute paths, no links out of the tree, no device files).

Credentials (:class:`Credentials`): an HTTPS token goes in an ``http.extraHeader`` passed
through ``GIT_CONFIG_*`` variables; an SSH key is written to a 0600 file in a private
temp folder named by ``GIT_SSH_COMMAND`` and removed after the command.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from socle.errors import SourceError
from socle.fs import private_dir

GIT_TIMEOUT = 120.0
"""A fetch of a big repository over a slow link may take a while; a hung one must not
hold the source's sync forever."""

SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class Credentials:
    """What a remote needs; ``repr`` never shows the values."""

    token: str | None = None
    username: str = "git"
    ssh_key: str | None = None

    def __repr__(self) -> str:
        return "Credentials(****)"

    @property
    def secrets(self) -> list[str]:
        found = [v for v in (self.token, self.ssh_key) if v]
        if self.token:
            found.append(_basic(self.username, self.token))
        return found


def _basic(username: str, token: str) -> str:
    return base64.b64encode(f"{username}:{token}".encode()).decode()


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    date: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"sha": self.sha, "author": self.author, "date": self.date, "message": self.message}


class Mirror:
    """One source's bare mirror of its remote."""

    def __init__(self, folder: Path, url: str, credentials: Credentials | None = None) -> None:
        self.folder = folder
        self.url = url
        self._credentials = credentials or Credentials()

    # -- running git ---------------------------------------------------------------------

    def _env(
        self, stack: contextlib.ExitStack, extra: tuple[tuple[str, str], ...] = ()
    ) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder.parent),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "LC_ALL": "C",
        }
        creds = self._credentials
        pairs: list[tuple[str, str]] = [("protocol.ext.allow", "never"), *extra]
        if creds.token:
            pairs.append(
                ("http.extraHeader", f"Authorization: Basic {_basic(creds.username, creds.token)}")
            )
        if creds.ssh_key:
            keydir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="socle-ssh-")))
            os.chmod(keydir, 0o700)
            key = keydir / "key"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(creds.ssh_key.strip() + "\n")
            env["GIT_SSH_COMMAND"] = (
                f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes "
                f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={keydir}/known_hosts"
            )
        else:
            env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
        env["GIT_CONFIG_COUNT"] = str(len(pairs))
        for index, (key_name, value) in enumerate(pairs):
            env[f"GIT_CONFIG_KEY_{index}"] = key_name
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        return env

    def _git(
        self,
        *args: str,
        check: bool = True,
        binary: bool = False,
        config: tuple[tuple[str, str], ...] = (),
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        with contextlib.ExitStack() as stack:
            env = {**self._env(stack, config), **(extra_env or {})}
            try:
                done = subprocess.run(
                    ["git", "--git-dir", str(self.folder), *args],
                    env=env,
                    capture_output=True,
                    timeout=GIT_TIMEOUT,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as exc:
                raise SourceError(
                    f"git {args[0]} did not finish within {GIT_TIMEOUT:.0f}s",
                    hint="check that the remote answers",
                ) from exc
        if check and done.returncode != 0:
            raise SourceError(
                f"git {args[0]} failed: {self.scrub(done.stderr.decode(errors='replace'))}",
                hint=f"check the repository URL {self.scrub(self.url)} and its credentials",
            )
        return done

    def scrub(self, text: str) -> str:
        """``text`` without credentials (also those embedded in a URL) and trimmed."""
        for secret in self._credentials.secrets:
            text = text.replace(secret, "****")
        text = re.sub(r"://[^/@\s]+@", "://****@", text)
        return text.strip()[-2000:]

    # -- operations ----------------------------------------------------------------------

    def fetch(self) -> None:
        """Create the mirror if needed, then fetch every branch and tag (force, prune)."""
        if not (self.folder / "HEAD").exists():
            private_dir(self.folder.parent)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(mode=0o700)
            self._git("init", "--bare", "--quiet")
        self._git(
            "fetch",
            "--prune",
            "--force",
            "--quiet",
            "--no-tags",
            "--",
            self.url,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        )

    def remote_sha(self, branch: str | None, ref: str | None) -> str | None:
        """The commit the remote's branch or tag names now, asked with one ``git ls-remote``
        (no fetch, no object transfer), or None when that cannot say (no mirror yet, a SHA
        or a name that is neither a branch nor a tag, a missing ref, a failing remote): the
        caller then fetches as usual, which reports the reason. A poll whose SHA did not
        move stops here: one fork instead of a fetch and a rev-parse."""
        if not (self.folder / "HEAD").exists():
            return None
        if branch is not None:
            names = [f"refs/heads/{branch}"]
        elif ref is not None and not SHA_RE.match(ref):
            names = [f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"]  # peeled (annotated) first
        else:
            return None
        done = self._git("ls-remote", "--", self.url, *names, check=False)
        if done.returncode != 0:
            return None
        found: dict[str, str] = {}
        for line in done.stdout.decode(errors="replace").splitlines():
            sha, _, name = line.partition("\t")
            found[name.strip()] = sha.strip()
        for name in names:  # exact names only: ls-remote patterns also match ref tails
            if SHA_RE.match(found.get(name, "")):
                return found[name]
        return None

    def resolve(self, branch: str | None, ref: str | None) -> str:
        """The commit a branch, tag or SHA names now (SourceError if it does not exist)."""
        if branch is not None:
            candidates = [f"refs/heads/{branch}"]
            what = f"branch {branch!r}"
        else:
            assert ref is not None
            candidates = [f"refs/tags/{ref}", ref] if not SHA_RE.match(ref) else [ref]
            what = f"ref {ref!r}"
        for candidate in candidates:
            done = self._git(
                "rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}",
                check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return done.stdout.decode().strip()
        raise SourceError(
            f"{what} does not exist in {self.scrub(self.url)}",
            hint="it may have been deleted or never pushed; the environment stays on its "
            "last good revision",
        )

    def commit(self, sha: str) -> CommitInfo:
        done = self._git("log", "-1", "--format=%H%x00%an <%ae>%x00%aI%x00%B", sha, "--")
        sha_, author, date, message = done.stdout.decode(errors="replace").split("\x00", 3)
        return CommitInfo(sha_, author, date, message.strip())

    def has_folder(self, sha: str, folder: str) -> bool:
        spec = f"{sha}:{folder.strip('/')}" if folder.strip("/") else f"{sha}^{{tree}}"
        done = self._git("cat-file", "-t", spec, check=False)
        return done.returncode == 0 and done.stdout.strip() == b"tree"

    def checkout(self, sha: str, folder: str, dest: Path) -> Path:
        """The tree of ``sha`` under ``folder``, extracted into a new ``dest``."""
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True, mode=0o700)
        spec = f"{sha}:{folder.strip('/')}" if folder.strip("/") else sha
        with contextlib.ExitStack() as stack:
            env = self._env(stack)
            with tempfile.TemporaryFile() as archive:
                done = subprocess.run(
                    ["git", "--git-dir", str(self.folder), "archive", "--format=tar", spec],
                    env=env,
                    stdout=archive,
                    stderr=subprocess.PIPE,
                    timeout=GIT_TIMEOUT,
                    check=False,
                )
                if done.returncode != 0:
                    raise SourceError(
                        f"git archive failed: {self.scrub(done.stderr.decode(errors='replace'))}"
                    )
                archive.seek(0)
                try:
                    with tarfile.open(fileobj=archive) as tar:
                        tar.extractall(dest, filter="data")
                except (tarfile.TarError, OSError) as exc:
                    shutil.rmtree(dest, ignore_errors=True)
                    raise SourceError(
                        f"commit {sha[:12]} cannot be checked out safely: {exc}",
                        hint="links must stay inside the repository; no absolute paths",
                    ) from exc
        return dest

    def verify_signature(
        self, sha: str, gpg_keys: list[str], ssh_signers: list[str], workdir: Path
    ) -> str:
        """Check with the real ``git verify-commit`` that ``sha`` is signed by one of the
        listed keys; returns who signed it, raises :class:`SourceError` naming why not.

        The keys live in a fresh private keyring (``GNUPGHOME``) and ``allowed_signers``
        file under ``workdir``, rebuilt on every check so that a key removed from the
        settings is no longer trusted; the keyring trusts exactly the listed keys."""
        shutil.rmtree(workdir, ignore_errors=True)
        private_dir(workdir)
        gnupg = workdir / "gnupg"
        gnupg.mkdir(mode=0o700)
        (gnupg / "gpg.conf").write_text("trust-model always\nno-autostart\n")
        signers = workdir / "allowed_signers"
        fd = os.open(signers, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(line + "\n" for line in ssh_signers))
        env = {"GNUPGHOME": str(gnupg)}
        try:
            # A keyring file made with --dearmor: importing would need gpg-agent, whose
            # socket path under a deep SOCLE_HOME can be too long; verifying needs none.
            keyring = bytearray()
            for key in gpg_keys:
                done = subprocess.run(
                    ["gpg", "--batch", "--quiet", "--no-options", "--dearmor"],
                    input=key.encode(),
                    env={**os.environ, **env, "LC_ALL": "C"},
                    capture_output=True,
                    timeout=GIT_TIMEOUT,
                    check=False,
                )
                if done.returncode != 0 or not done.stdout:
                    raise SourceError(
                        "a signing key of the environment cannot be read: "
                        + done.stderr.decode(errors="replace").strip()[-500:],
                        hint="list ASCII-armored public keys (`gpg --armor --export KEYID`)",
                    )
                keyring += done.stdout
            fd = os.open(gnupg / "pubring.gpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as ring:
                ring.write(bytes(keyring))
            done = self._git(
                "verify-commit",
                "--raw",
                sha,
                check=False,
                config=(("gpg.ssh.allowedSignersFile", str(signers)),),
                extra_env=env,
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        output = done.stderr.decode(errors="replace")
        if done.returncode == 0:
            return _signer(output)
        signed = self._git("cat-file", "commit", sha).stdout
        if b"\ngpgsig " not in signed:
            raise SourceError(
                f"commit {sha[:12]} is not signed",
                hint="this environment accepts only commits signed by its listed keys",
            )
        why = _signature_problem(output)
        raise SourceError(
            f"commit {sha[:12]} has no good signature by a key of this environment: {why}",
            hint="sign with a key listed in the source's signingKeys / allowedSigners",
        )

    def revert_to(self, branch: str, target: str, folder: str, message: str) -> str:
        """Write a commit on ``branch`` (on top of its current head) whose ``folder`` is as
        at commit ``target`` (the rest of the tree unchanged: other teams' folders are not
        touched), push it to the remote (fast-forward only: a push made meanwhile makes
        this fail, never lost) and return its SHA."""
        head = self.resolve(branch, None)
        folder = folder.strip("/")
        with tempfile.TemporaryDirectory(prefix="socle-revert-") as tmp:
            # A private index and an empty work tree (never written: index-only commands).
            (Path(tmp) / "tree").mkdir()
            index = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": f"{tmp}/tree"}
            if folder in ("", "."):
                tree = self._git("rev-parse", f"{target}^{{tree}}").stdout.decode().strip()
            else:
                self._git("read-tree", head, extra_env=index)
                listed = self._git("ls-files", "-z", "--", folder, extra_env=index).stdout
                if listed:
                    done = subprocess.run(
                        ["git", "--git-dir", str(self.folder), "update-index",
                         "--force-remove", "-z", "--stdin"],
                        input=listed, env={**os.environ, **index}, capture_output=True,
                        timeout=GIT_TIMEOUT, check=False,
                    )  # fmt: skip
                    if done.returncode != 0:
                        raise SourceError(f"git update-index failed: {done.stderr.decode()[-500:]}")
                if self.has_folder(target, folder):
                    self._git("read-tree", f"--prefix={folder}/", f"{target}:{folder}",
                              extra_env=index)  # fmt: skip
                tree = self._git("write-tree", extra_env=index).stdout.decode().strip()
        who = {"GIT_AUTHOR_NAME": "Socle", "GIT_AUTHOR_EMAIL": "socle@localhost",
               "GIT_COMMITTER_NAME": "Socle", "GIT_COMMITTER_EMAIL": "socle@localhost"}  # fmt: skip
        new = (
            self._git("commit-tree", tree, "-p", head, "-m", message, extra_env=who)
            .stdout.decode()
            .strip()
        )
        self._git("push", "--quiet", "--", self.url, f"{new}:refs/heads/{branch}")
        self._git("update-ref", f"refs/heads/{branch}", new, head)
        return new

    def diff_names(self, old: str, new: str) -> list[str]:
        done = self._git("diff", "--name-only", old, new, "--", check=False)
        return done.stdout.decode(errors="replace").splitlines()


def _signer(output: str) -> str:
    """Who signed, from ``verify-commit --raw`` output (GPG status lines or ssh-keygen)."""
    for line in output.splitlines():
        if line.startswith("[GNUPG:] GOODSIG "):
            return line.split(" ", 3)[-1].strip()
        if line.startswith('Good "git" signature for '):
            return line[len('Good "git" signature for ') :].split(" with ", 1)[0].strip()
    return "a listed key"


def _signature_problem(output: str) -> str:
    """A one-line reason a signature was refused (no key material, no paths)."""
    for marker, reason in (
        ("[GNUPG:] BADSIG", "bad signature (the commit was changed after signing)"),
        ("[GNUPG:] ERRSIG", "signed by a key that is not listed"),
        ("[GNUPG:] NO_PUBKEY", "signed by a key that is not listed"),
        ("[GNUPG:] EXPKEYSIG", "signed by an expired key"),
        ("[GNUPG:] REVKEYSIG", "signed by a revoked key"),
        ("No principal matched", "signed by an SSH key that is not listed"),
        ("allowedSignersFile needs to be configured", "SSH signature but no SSH signer listed"),
        ("Signature verification failed", "bad SSH signature"),
        ("incorrect signature", "bad SSH signature"),
    ):
        if marker in output:
            return reason
    return "signature not verified"
