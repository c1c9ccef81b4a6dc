"""The ``Source`` kind: a Git repository, a branch, tag or commit, and a folder that one
environment follows (GitOps). Kept in a bootstrap manifest in Git, or made with
``socle source add``; the same model validates both.

A source never carries a credential: ``credentials`` and ``webhookSecret`` are paths in
the secrets engine (``secret/data/git/NAME``), read when needed with the ACL policy
``gitops-<source>``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from socle.model.app import Metadata, Spec, no_controls
from socle.units import Duration

ENV_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
"""Environment names: short DNS labels (they end up in ``APP.ENV.socle.internal``)."""
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
"""Branch, tag or SHA: no leading dash (never read as an option), no spaces, no ``..``."""
URL_RE = re.compile(r"^(https?|ssh|git|file)://\S+$|^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:\S+$|^/\S*$")
SECRET_PATH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,255}$")
GPG_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
GPG_END = "\n-----END PGP PUBLIC KEY BLOCK-----"
"""One ASCII-armored public key block, nothing else (never a private key)."""
CONTROLS_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
SIGNER_RE = re.compile(
    r"^[^\s#][^\s]*(\s+[^\s]+)?\s+"
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com)\s+[A-Za-z0-9+/]+={0,3}(\s+[^\n]*)?$"
)
"""An ``allowed_signers`` line: principals, optional options, key type, key, comment."""


def check_env(value: str) -> str:
    if not ENV_RE.fullmatch(value):
        raise ValueError(f"invalid environment {value!r}: 1-32 lowercase letters, digits and '-'")
    return value


def check_ref(value: str) -> str:
    if not REF_RE.fullmatch(value) or ".." in value or value.endswith((".lock", "/")):
        raise ValueError(f"invalid git ref {value!r}")
    return value


class SourceSpec(Spec):
    repo: str = Field(min_length=1, max_length=4096)
    """Repository URL (https, ssh, git, file) or local path."""
    branch: str | None = None
    ref: str | None = None
    """A tag or a commit SHA (instead of ``branch``)."""
    path: str = "."
    """Folder of the repository holding the manifests."""
    env: str
    """The environment this source feeds."""
    auto_sync: bool = True
    prune: bool = False
    """Delete objects that left Git (off: they are kept and reported as out of sync)."""
    self_heal: bool = False
    """Correct drift (an instance killed, an app changed by hand) as well as report it."""
    interval: Duration = 60.0
    """Poll interval (jittered by ±10%); webhooks sync at once whatever it is."""
    require_approval: bool = False
    """A commit promoted into this source's environment waits for ``socle approve ENV``."""
    signing_keys: list[str] = Field(default_factory=list, max_length=32)
    """ASCII-armored GPG public keys; with ``allowed_signers``, the keys a commit must be
    signed with (checked by ``git verify-commit``) before it is applied here."""
    allowed_signers: list[str] = Field(default_factory=list, max_length=256)
    """SSH ``allowed_signers`` lines (``PRINCIPAL KEYTYPE KEY``) for SSH-signed commits."""
    credentials: str | None = None
    """Secrets engine path holding ``token`` (https) or ``ssh_key`` (ssh)."""
    webhook_secret: str | None = None
    """Secrets engine path holding ``secret``: the GitHub HMAC key / GitLab token."""

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        no_controls(value)
        if value.startswith("-") or not URL_RE.match(value):
            raise ValueError(f"invalid repository {value!r}: a URL or an absolute path")
        return value

    @field_validator("branch", "ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return None if value is None else check_ref(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        no_controls(value)
        parts = [p for p in value.strip("/").split("/") if p not in ("", ".")]
        if value.startswith("/") or ".." in parts:
            raise ValueError(f"invalid path {value!r}: a folder inside the repository")
        return "/".join(parts) or "."

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        return check_env(value)

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 1:
            raise ValueError("interval must be at least 1s")
        return value

    @field_validator("signing_keys")
    @classmethod
    def _gpg(cls, value: list[str]) -> list[str]:
        out = []
        for index, key in enumerate(value):
            key = key.strip().replace("\r\n", "\n")
            one_block = (
                key.startswith(GPG_BEGIN)
                and key.endswith(GPG_END)
                and key.count("-----") == 4
                and not CONTROLS_BUT_NEWLINE.search(key)
            )
            if len(key) > 65536 or not one_block:
                raise ValueError(
                    f"signing key {index + 1} is not one ASCII-armored PGP public key block "
                    "(`gpg --armor --export KEYID`)"
                )
            out.append(key)
        return out

    @field_validator("allowed_signers")
    @classmethod
    def _signers(cls, value: list[str]) -> list[str]:
        out = []
        for index, line in enumerate(value):
            line = line.strip()
            if len(line) > 16384 or "\n" in line or not SIGNER_RE.fullmatch(line):
                raise ValueError(
                    f"allowed signer {index + 1} is not an allowed_signers line "
                    "(PRINCIPAL KEYTYPE BASE64KEY)"
                )
            no_controls(line)
            out.append(line)
        return out

    @property
    def signed_commits(self) -> bool:
        """Commits must carry a good signature by one of the listed keys."""
        return bool(self.signing_keys or self.allowed_signers)

    @field_validator("credentials", "webhook_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and (not SECRET_PATH_RE.fullmatch(value) or ".." in value):
            raise ValueError(f"invalid secrets path {value!r}")
        return value

    @model_validator(mode="after")
    def _one_ref(self) -> SourceSpec:
        if (self.branch is None) == (self.ref is None):
            raise ValueError("give exactly one of branch or ref")
        return self


class Source(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["Source"]
    metadata: Metadata
    spec: SourceSpec

    @property
    def name(self) -> str:
        return self.metadata.name
