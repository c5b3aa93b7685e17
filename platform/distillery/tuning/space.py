"""The search space of the spec's `tune` section, checked against the spec, and trial specs.

A space names spec fields by path (`distill.temperature`, `student.model.channels`,
`distill.feature.pairs.0.weight`), so whatever fields the strategies grow can be searched
without this module knowing them: every bound is put into the spec and validated by the spec's
own models, and a bad one fails with the path of the tune field and the spec's reason. Pure: no
Ray.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from distillery.config import (
    PipelineSpec,
    SearchDim,
    SpecError,
    section_override,
    validate_spec,
)

SEARCHABLE = ("distill", "student")
"""Top-level sections a space may reach into: trials share the teacher and its logit cache."""

SET_BY_TUNE = {"distill.num_workers": "tune.workers_per_trial", "distill.epochs": "tune.epochs"}


def space_override(path: str) -> str:
    """`--space FILE` as a `--set tune=...` override, so later --set items still apply."""
    return section_override("tune", path, "--space")


def trial_base(spec: PipelineSpec) -> dict:
    """The resolved spec every trial starts from: no tune section, and the tune section's
    per-trial sizing applied."""
    raw = spec.model_dump(mode="json", exclude={"tune"})
    raw["distill"]["num_workers"] = spec.tune.workers_per_trial
    if spec.tune.epochs:
        raw["distill"]["epochs"] = spec.tune.epochs
    return raw


def trial_spec(base: dict, values: dict[str, Any]) -> PipelineSpec:
    """`base` with each `path: value` set, validated."""
    raw = copy.deepcopy(base)
    for path, value in values.items():
        _set(raw, path, value)
    return validate_spec(raw)


def spec_values(base: dict, paths) -> dict[str, Any]:
    """The values `base` has at `paths`: the point the first trial evaluates."""
    return {path: _get(base, path) for path in paths}


def check_space(spec: PipelineSpec) -> None:
    """Every searched path exists and every bound (each choice value) gives a valid spec;
    raises SpecError naming the tune field, e.g. `tune.space.distill.temperature.lower: must be
    > 0, got 0`."""
    tune = spec.tune
    try:
        base = trial_base(spec)
        validate_spec(base)
    except SpecError as err:  # e.g. batch_size not a multiple of workers_per_trial
        raise SpecError(f"tune.workers_per_trial: {err}") from None
    for path, dim in tune.space.items():
        field = f"tune.space.{path}"
        if path.split(".")[0] not in SEARCHABLE:
            raise SpecError(f"{field}: only distill.* and student.* fields can be searched; "
                            "every trial reads the same teacher and logit cache")
        if path in SET_BY_TUNE:
            raise SpecError(f"{field}: set by {SET_BY_TUNE[path]}, not searched")
        try:
            own = _get(base, path)
        except SpecError as err:
            raise SpecError(f"{field}: {err}") from None
        if tune.search_alg == "optuna" and dim.type == "choice" and not all(
                v is None or isinstance(v, bool | int | float | str) for v in dim.values):
            raise SpecError(f"{field}.values: optuna takes numbers, strings or booleans only; "
                            "use search_alg random for lists and mappings")
        accepted = []  # each candidate as the spec holds it (defaults filled in)
        for bound, value in _candidates(dim):
            try:
                accepted.append(_get(trial_spec(base, {path: value}).model_dump(mode="json"),
                                     path))
            except SpecError as err:
                reason = str(err).removeprefix(f"{path}: ")
                raise SpecError(f"{field}.{bound}: {reason}") from None
        if not (own in accepted if dim.type == "choice" else accepted[0] <= own <= accepted[1]):
            raise SpecError(f"{field}: the spec's own value {json.dumps(own)} is outside the "
                            "space; the first trial evaluates it, as the baseline of the search")
    if tune.scheduler.type == "asha":
        epochs = base["distill"]["epochs"]
        if tune.scheduler.grace_period >= epochs:
            raise SpecError(f"tune.scheduler.grace_period: must be < the trials' epochs "
                            f"({epochs}), got {tune.scheduler.grace_period}")


def _candidates(dim: SearchDim) -> list[tuple[str, Any]]:
    if dim.type == "choice":
        return [(f"values.{i}", v) for i, v in enumerate(dim.values)]
    return [("lower", dim.lower), ("upper", dim.upper)]


def _walk(raw: dict, path: str) -> tuple[dict | list, str | int]:
    """(container, key) of the field at `path`; list items by index."""
    parts = path.split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the spec"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(f"{where} is a list of {len(node)}; no item {part!r}")
            part = int(part)
        elif node is None:
            raise SpecError(f"{where} is not set in the spec, so it has no field {part!r}")
        elif not isinstance(node, dict):
            raise SpecError(f"{where} is a value, not a section with field {part!r}")
        elif part not in node:
            raise SpecError(f"unknown field {part!r}; {where} has: {', '.join(node)}")
        if depth == len(parts) - 1:
            return node, part
        node = node[part]


def _get(raw: dict, path: str) -> Any:
    node, key = _walk(raw, path)
    return node[key]


def _set(raw: dict, path: str, value: Any) -> None:
    node, key = _walk(raw, path)
    node[key] = value
