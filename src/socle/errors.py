"""Socle's exception tree.

Every error a user can see is a :class:`SocleError`: it carries a message that says what
went wrong, a hint that says what to do next and the HTTP status the API answers it with
(``http_status``; 5xx means a fault of the server, not of the request). Library errors are translated at the
boundary (``raise SomeSocleError(...) from exc``) so that no vendor exception leaks out.

    SocleError
    ├── ManifestError          bad manifests: one or more Problems with file/line/field
    ├── ConfigError            bad settings or CLI flags
    ├── NotFoundError          a named thing (app, revision, release) does not exist
    ├── ConflictError          a compare-and-swap write lost a race
    ├── DeleteAllRefused       a plan would delete every object (needs --allow-delete-all)
    ├── StoreError             the state store failed
    ├── LeaseHeld              another control plane leads on the shared state store
    ├── LeaseLost              this control plane lost its leader lease and stopped acting
    ├── BuildError             a release build step failed (permanent for that release)
    ├── RuntimeDriverError     the runtime could not start/stop/inspect an instance
    │   └── StartRefused       this instance can never start as specified (permanent)
    ├── SecretUnavailable      a secret an app references cannot be read (ACL, missing, sealed)
    ├── SourceError            a GitOps source cannot be read (unreachable, missing ref or folder)
    ├── BackupError            a backup archive is bad (tampered, truncated, hostile) or cannot be made
    ├── ObserveError           Prometheus/Alertmanager refused a config or a query, or is down
    │   └── QueryRejected      a PromQL query (or a silence) the server refused as bad input
    ├── FirewallError          nft refused a ruleset (the previous one stays) or cannot run
    ├── ApiError               the control plane answered with an error
    │   └── AuthError          missing/invalid token
    └── ServerNotRunning       the CLI could not reach a control plane
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class SocleError(Exception):
    """Base of every user-facing error."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, object]:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the manifests, located as precisely as we can."""

    file: str | None
    line: int | None
    path: str
    reason: str
    column: int | None = None
    """Only for problems in the YAML text itself (syntax, aliases), where the column helps."""

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where = f"{where}:{self.line}"
            if self.column is not None:
                where = f"{where}:{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.reason}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "reason": self.reason,
        }


class ManifestError(SocleError):
    """The manifests are invalid; nothing was changed."""

    http_status = 422

    def __init__(self, problems: list[Problem], *, hint: str | None = None) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        count = len(problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in manifests:\n{lines}",
            hint=hint or "fix the manifests and run `socle validate` again; nothing was changed",
        )

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data["problems"] = [p.to_dict() for p in self.problems]
        return data


class ConfigError(SocleError):
    """Bad settings, environment variables or command-line flags."""

    http_status = 400


class TemplateError(ConfigError):
    """An app's template (``spec.templates``) cannot be read or rendered."""


class NotFoundError(SocleError):
    """A named object does not exist."""

    http_status = 404


class ConflictError(SocleError):
    """A compare-and-swap write found another version than expected."""

    http_status = 409


class DeleteAllRefused(SocleError):
    """A plan would delete every object and keep none: refused unless asked for explicitly."""

    http_status = 409


class StoreError(SocleError):
    """The state store failed to read or write."""

    http_status = 503


class LeaseHeld(SocleError):
    """Another control plane holds the leader lease of the shared state store."""

    http_status = 409


class LeaseLost(SocleError):
    """The leader lease was lost while running: the control plane stopped acting (fenced)."""

    http_status = 503


class BuildError(SocleError):
    """A build step of a release failed."""

    http_status = 422


class RuntimeDriverError(SocleError):
    """The runtime driver could not do what was asked."""

    http_status = 500


class StartRefused(RuntimeDriverError):
    """An instance can never start as specified: its program is missing or not executable,
    its command or env holds a NUL byte, an env name is invalid. Retrying the same spec
    cannot help (releases are immutable), so a rollout fails at once instead of waiting
    for its deadline."""

    http_status = 422


class SecretUnavailable(SocleError):
    """A secret that an app references cannot be read with the app's policy.

    The secrets engine raises it at its boundary, so that callers (the engine) need not know
    the engine's own error types; ``status`` is the engine's answer (403, 404, 503).
    """

    def __init__(self, message: str, *, status: int = 404, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.http_status = status


class SourceError(SocleError):
    """A GitOps source cannot be read: remote unreachable, branch/tag/folder missing.

    Nothing is changed when it happens: the environment stays on its last good revision."""

    http_status = 502


class BackupError(SocleError):
    """A backup cannot be made, or an archive is bad: tampered, truncated or hostile.

    ``entry`` names the first bad entry of the archive when there is one."""

    http_status = 422

    def __init__(self, message: str, *, entry: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.entry = entry


class ObserveError(SocleError):
    """The metrics or alerting data plane (Prometheus, Alertmanager) failed or refused."""

    http_status = 502


class QueryRejected(ObserveError):
    """Bad PromQL (or a bad silence): the request's fault, not the server's."""

    http_status = 400


class FirewallError(SocleError):
    """``nft`` refused a ruleset (the previous ruleset stays loaded) or could not run."""

    http_status = 500


class ApiError(SocleError):
    """The control plane answered with an error."""

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.http_status = status


class AuthError(ApiError):
    """The request had no valid token."""


class ServerNotRunning(SocleError):
    """The CLI found no control plane to talk to."""


def need(value: T | None, what: str) -> T:
    """``value``, which an earlier control-plane component made (the server's parts, the
    observe components); a wrong component order fails loudly instead of a None deep down."""
    if value is None:
        raise SocleError(f"component order is wrong: {what} is not started yet")
    return value
