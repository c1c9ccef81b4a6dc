"""KV v2 key metadata: versions, the sliding window of ``max_versions``, deletion state.

Kept free of I/O so the version arithmetic (which versions exist, which are deleted, which
must be trimmed) is tested as plain data. Times are integer nanoseconds so that the API can
print them with nanosecond precision like Vault does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from socle.secrets.engines._framework import rfc3339_nano
from socle.units import go_duration

DEFAULT_MAX_VERSIONS = 10


@dataclass
class VersionMeta:
    created_ns: int
    deletion_ns: int = 0
    """0 when not deleted (nor scheduled for deletion)."""
    destroyed: bool = False

    def is_deleted(self, now_ns: int) -> bool:
        return self.deletion_ns != 0 and self.deletion_ns <= now_ns

    def describe(self) -> dict[str, Any]:
        return {
            "created_time": rfc3339_nano(self.created_ns),
            "deletion_time": rfc3339_nano(self.deletion_ns) if self.deletion_ns else "",
            "destroyed": self.destroyed,
        }


@dataclass
class EngineConfig:
    max_versions: int = 0
    cas_required: bool = False
    delete_version_after: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "max_versions": self.max_versions,
            "cas_required": self.cas_required,
            "delete_version_after": go_duration(self.delete_version_after),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "max_versions": self.max_versions,
            "cas_required": self.cas_required,
            "delete_version_after": self.delete_version_after,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> EngineConfig:
        if not raw:
            return cls()
        return cls(
            max_versions=int(raw.get("max_versions", 0)),
            cas_required=bool(raw.get("cas_required", False)),
            delete_version_after=float(raw.get("delete_version_after", 0.0)),
        )


@dataclass
class KeyMeta:
    path: str
    created_ns: int
    updated_ns: int
    versions: dict[int, VersionMeta] = field(default_factory=dict)
    current_version: int = 0
    oldest_version: int = 0
    max_versions: int = 0
    cas_required: bool = False
    delete_version_after: float = 0.0
    custom_metadata: dict[str, str] | None = None
    current_metadata_version: int = 0
    """OpenBao counts writes of the metadata itself (not of data versions)."""

    def effective_max_versions(self, config: EngineConfig) -> int:
        """The key's own setting wins, then the engine's, then Vault's default of 10."""
        if self.max_versions > 0:
            return self.max_versions
        if config.max_versions > 0:
            return config.max_versions
        return DEFAULT_MAX_VERSIONS

    def deletion_after(self, config: EngineConfig) -> float:
        """The shorter non-zero of the key's and the engine's ``delete_version_after``."""
        candidates = [d for d in (self.delete_version_after, config.delete_version_after) if d > 0]
        return min(candidates) if candidates else 0.0

    def add_version(self, now_ns: int, config: EngineConfig) -> tuple[VersionMeta, list[int]]:
        """Append a version; returns it and the version numbers that fell out of the window."""
        after = self.deletion_after(config)
        deletion_ns = now_ns + int(after * 1e9) if after > 0 else 0
        meta = VersionMeta(created_ns=now_ns, deletion_ns=deletion_ns)
        self.current_version += 1
        self.versions[self.current_version] = meta
        self.updated_ns = now_ns
        keep = self.effective_max_versions(config)
        trimmed: list[int] = []
        if self.current_version - self.oldest_version >= keep:
            last_dropped = self.current_version - keep
            for number in sorted(self.versions):
                if number <= last_dropped:
                    trimmed.append(number)
                    del self.versions[number]
            self.oldest_version = last_dropped + 1
        return meta, trimmed

    def describe(self) -> dict[str, Any]:
        return {
            "versions": {str(n): v.describe() for n, v in sorted(self.versions.items())},
            "current_version": self.current_version,
            "oldest_version": self.oldest_version,
            "created_time": rfc3339_nano(self.created_ns),
            "updated_time": rfc3339_nano(self.updated_ns),
            "max_versions": self.max_versions,
            "cas_required": self.cas_required,
            "delete_version_after": go_duration(self.delete_version_after),
            "custom_metadata": (
                dict(self.custom_metadata) if self.custom_metadata is not None else None
            ),
            "current_metadata_version": self.current_metadata_version,
            "metadata_cas_required": False,
        }

    def version_summary(self, number: int, version: VersionMeta) -> dict[str, Any]:
        """The metadata block returned next to data, as on ``data/`` reads and writes."""
        return {
            **version.describe(),
            "custom_metadata": self.custom_metadata,
            "version": number,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "created_ns": self.created_ns,
            "updated_ns": self.updated_ns,
            "versions": {
                str(n): [v.created_ns, v.deletion_ns, v.destroyed] for n, v in self.versions.items()
            },
            "current_version": self.current_version,
            "oldest_version": self.oldest_version,
            "max_versions": self.max_versions,
            "cas_required": self.cas_required,
            "delete_version_after": self.delete_version_after,
            "custom_metadata": self.custom_metadata,
            "current_metadata_version": self.current_metadata_version,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KeyMeta:
        return cls(
            path=str(raw["path"]),
            created_ns=int(raw["created_ns"]),
            updated_ns=int(raw["updated_ns"]),
            versions={
                int(n): VersionMeta(int(v[0]), int(v[1]), bool(v[2]))
                for n, v in raw["versions"].items()
            },
            current_version=int(raw["current_version"]),
            oldest_version=int(raw["oldest_version"]),
            max_versions=int(raw["max_versions"]),
            cas_required=bool(raw["cas_required"]),
            delete_version_after=float(raw["delete_version_after"]),
            custom_metadata=raw.get("custom_metadata"),
            current_metadata_version=int(raw.get("current_metadata_version", 0)),
        )


MAX_CUSTOM_KEYS = 64
MAX_CUSTOM_KEY_LENGTH = 128
MAX_CUSTOM_VALUE_LENGTH = 512
_CUSTOM_PREFIX = "custom_metadata validation failed"


def validate_custom_metadata(custom: dict[str, str]) -> list[str]:
    """Vault's limits on ``custom_metadata``; all problems at once, as Vault reports them."""
    if len(custom) > MAX_CUSTOM_KEYS:
        return [
            f"{_CUSTOM_PREFIX}: payload must contain at most {MAX_CUSTOM_KEYS} keys, "
            f"provided {len(custom)}"
        ]
    problems: list[str] = []
    for key, value in custom.items():
        if not 0 < len(key) <= MAX_CUSTOM_KEY_LENGTH:
            problems.append(
                f"{_CUSTOM_PREFIX}: length of key {key[:140]!r} is {len(key)} but must be "
                f"0 < len(key) <= {MAX_CUSTOM_KEY_LENGTH}"
            )
        if not 0 < len(value) <= MAX_CUSTOM_VALUE_LENGTH:
            problems.append(
                f"{_CUSTOM_PREFIX}: length of value for key {key[:140]!r} is {len(value)} but "
                f"must be 0 < len(value) <= {MAX_CUSTOM_VALUE_LENGTH}"
            )
        if not key.isprintable():
            problems.append(f"{_CUSTOM_PREFIX}: key {key[:140]!r} contains unprintable characters")
        if not value.isprintable():
            problems.append(
                f"{_CUSTOM_PREFIX}: value for key {key[:140]!r} contains unprintable characters"
            )
    return problems


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: ``null`` removes, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def subkeys(data: dict[str, Any], depth: int, level: int = 1) -> dict[str, Any]:
    """Keys of a secret without its values: leaves become ``null`` (Vault's ``subkeys``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and (depth == 0 or level < depth):
            out[key] = subkeys(value, depth, level + 1)
        else:
            out[key] = None
    return out
