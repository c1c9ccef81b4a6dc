"""Expiry of the certificates the control plane serves with, as a gauge.

``socle_tls_certificate_expiry_timestamp_seconds{file}``: the ``notAfter`` of the first
certificate in each PEM file (the API's ``tls_cert``), read again only when the file
changes (a renewed certificate shows at the next scrape). The built-in rule
``SocleCertificateExpiringSoon`` fires 14 days before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509


def not_after(path: Path) -> float | None:
    """``notAfter`` of the first certificate of ``path`` as a Unix time (None: unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()


class CertificateExpiry:
    """A gauge source over ``files``, each parsed again only when its mtime changes."""

    def __init__(self, files: Sequence[Path]) -> None:
        self._files = list(files)
        self._seen: dict[Path, tuple[float, float | None]] = {}

    def __call__(self) -> Iterable[tuple[tuple[str, ...], float]]:
        for path in self._files:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            seen = self._seen.get(path)
            if seen is None or seen[0] != mtime:
                seen = (mtime, not_after(path))
                self._seen[path] = seen
            if seen[1] is not None:
                yield (str(path),), seen[1]


__all__ = ["CertificateExpiry", "not_after"]
