"""The ``Volume`` kind: a named, persistent folder that apps mount and that outlives releases.

``spec.size`` is what the provider reserves (enforced where the filesystem can, else
reported as usage with a warning); ``retain`` keeps the data after the manifest is deleted,
until ``socle volume delete NAME --purge``; ``backup`` asks for a scheduled backup.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from socle.model.app import Metadata, Spec
from socle.model.units import Size

MIN_SIZE = 1024 * 1024
"""The smallest volume: a filesystem image needs room for its own metadata."""
_CRON_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_NAMES: dict[int, dict[str, int]] = {
    3: {
        m: i + 1
        for i, m in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        )
    },
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}


def check_cron(expression: str) -> str:
    """``expression`` if it is a standard 5-field cron schedule, else ValueError saying why.

    Each field is a comma-separated list of ``*``, ``N``, ``N-M``, each optionally ``/STEP``;
    months and days of week also take names (``jan``, ``mon``). Values are range-checked.
    """
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(
            f"schedule {expression!r} must have 5 fields (minute hour day-of-month month "
            f"day-of-week), e.g. '0 3 * * *'; it has {len(parts)}"
        )
    for index, (text, (label, low, high)) in enumerate(zip(parts, _CRON_FIELDS, strict=True)):
        names = _NAMES.get(index, {})
        for item in text.split(","):
            _check_cron_item(item, label, low, high, names, expression)
    return expression


def _check_cron_item(
    item: str, label: str, low: int, high: int, names: dict[str, int], expression: str
) -> None:
    where = f"schedule {expression!r}: {label} {item!r}"
    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) < 1):
        raise ValueError(f"{where}: the step after '/' must be a whole number of at least 1")
    if base == "*":
        return
    bounds = base.split("-")
    if len(bounds) > 2 or not all(bounds):
        raise ValueError(f"{where}: use *, N, N-M or N-M/STEP")
    values = []
    for bound in bounds:
        value = names.get(bound.lower()) if not bound.isdigit() else int(bound)
        if value is None:
            raise ValueError(f"{where}: {bound!r} is not a number")
        if not low <= value <= high:
            raise ValueError(f"{where}: {value} is out of range {low}-{high}")
        values.append(value)
    if len(values) == 2 and values[0] > values[1]:
        raise ValueError(f"{where}: the range starts after it ends")


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
