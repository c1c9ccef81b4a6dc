"""Request bodies shared by the routers: strict (unknown fields are refused)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


__all__ = ["Body"]
