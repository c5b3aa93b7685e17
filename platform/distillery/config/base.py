"""Shared base of every spec model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""Names and run ids that become one path segment in the store: no separators, no leading dot,
so no `..` can climb out of it."""


class SpecError(ValueError):
    """A pipeline spec is invalid; the message is one line naming the field path."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
