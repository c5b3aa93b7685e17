"""`--serving FILE`: the spec's serve section kept in a file of its own (serve/*.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distillery.config import SpecError


def serving_override(path: str) -> str:
    """The file as a `--set serve=...` override, so later --set items still apply."""
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"--serving: file not found: {file}")
    try:
        section = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{file}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(section, dict):
        raise SpecError(f"{file}: must be a mapping of serve settings, got "
                        f"{type(section).__name__}")
    return f"serve={json.dumps(section)}"
