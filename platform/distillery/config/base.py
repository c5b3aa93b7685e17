"""Shared base of every spec model."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
)


class SpecError(ValueError):
    """A pipeline spec is invalid; the message is one line naming the field path."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
