"""The ``Volume`` kind: a named, persistent folder that apps mount and that outlives releases.

``spec.size`` is what the provider reserves (enforced where the filesystem can, else
reported as usage with a warning); ``retain`` keeps the data after the manifest is deleted,
until ``socle volume delete NAME --purge``; ``backup`` asks for a scheduled backup.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from socle.model import cron
from socle.model.app import Metadata, Spec
from socle.units import Size

MIN_SIZE = 1024 * 1024
"""The smallest volume: a filesystem image needs room for its own metadata."""


def check_cron(expression: str) -> str:
    """``expression`` if it is a standard 5-field cron schedule (see :mod:`socle.model.cron`,
    which the scheduled backups run on), else ValueError naming the field and the reason."""
    try:
        cron.parse(expression)
    except ValueError as exc:
        raise ValueError(f"schedule {expression!r}: {exc}") from None
    return expression


class BackupSpec(Spec):
    schedule: str = Field(json_schema_extra={"examples": ["0 3 * * *"]})
    """Standard 5-field cron expression (minute hour day-of-month month day-of-week)."""
    keep: int = Field(default=7, ge=1, le=10_000)
    """How many backups to keep; older ones are removed."""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return check_cron(value)


class VolumeSpec(Spec):
    size: Size
    retain: bool = True
    """Keep the data when the manifest is deleted (until ``socle volume delete --purge``)."""
    backup: BackupSpec | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, value: int) -> int:
        if value < MIN_SIZE:
            raise ValueError(f"a volume needs at least 1Mi ({MIN_SIZE} bytes), e.g. '1Gi'")
        return value


class Volume(Spec):
    api_version: Literal["socle/v1"]
    kind: Literal["Volume"]
    metadata: Metadata
    spec: VolumeSpec

    @property
    def name(self) -> str:
        return self.metadata.name
