"""Errors raised inside the secrets core, all answered over HTTP as Vault does.

Everything is a :class:`~socle.secrets.backend.SecretsError` (status + ``errors`` list), so
the HTTP layer has one ``except`` clause and backends share the same vocabulary::

    SecretsError                 (socle.secrets.backend) any Vault-style error
    ├── SealedError              503 "Vault is sealed": the barrier has no keys
    ├── PermissionDenied         403 "permission denied": no/bad token or ACL refusal
    ├── IntegrityError           500: a ciphertext failed authentication (tampered, moved)
    └── AuditFailure             500: audit devices are enabled and none could write
"""

from __future__ import annotations

from socle.secrets.backend import SecretsError

SEALED_MESSAGE = "Vault is sealed"
PERMISSION_DENIED = "permission denied"


def multierror(message: str) -> str:
    """Vault wraps some errors in Go's multierror text; clients print it as is."""
    return f"1 error occurred:\n\t* {message}\n\n"


ACL_DENIED = multierror(PERMISSION_DENIED)
"""A valid token whose policies refuse the request (no/bad token: plain PERMISSION_DENIED)."""


class SealedError(SecretsError):
    def __init__(self) -> None:
        super().__init__(503, SEALED_MESSAGE)


class PermissionDenied(SecretsError):
    def __init__(self, message: str = PERMISSION_DENIED) -> None:
        super().__init__(403, message)


class IntegrityError(SecretsError):
    """Decryption failed: the entry was edited, moved to another key, or the key is wrong.

    The path is named (paths are not secret, as in Vault) so an operator can find the entry.
    """

    def __init__(self, path: str) -> None:
        super().__init__(500, f"integrity check failed for storage entry {path!r}")
        self.path = path


class AuditFailure(SecretsError):
    def __init__(self) -> None:
        super().__init__(500, "internal error: no audit device could record the request")
