"""Property tests of spec parsing: whatever a user writes, `load_spec` returns a valid spec or
raises a one-line SpecError naming a field; never another exception, never a traceback."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillery.config import SpecError, load_spec

from helpers import REFERENCE_SPEC, ROOT

LM_SPEC = ROOT / "jobs" / "configs" / "tiny_lm.yaml"


def field_paths(node, prefix=()) -> list[str]:
    """Every key path of the reference spec (sections and leaves), plus list items."""
    paths = []
    if isinstance(node, dict):
        for key, value in node.items():
            paths.append(".".join((*prefix, str(key))))
            paths += field_paths(value, (*prefix, str(key)))
    return paths


PATHS = field_paths(yaml.safe_load(REFERENCE_SPEC.read_text())) + [
    "serve.rollout.steps", "serve.student", "monitor.window_s", "tune.space", "distill.feature",
    "bogus", "data.bogus"]
LM_PATHS = field_paths(yaml.safe_load(LM_SPEC.read_text())) + [
    "teacher.hf.n_positions", "student.hf.bogus", "data.paths", "data.field", "bogus"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_any_override_gives_a_spec_or_one_line_naming_a_field(overrides):
    check_spec_or_one_line(REFERENCE_SPEC, overrides)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(LM_PATHS), values), min_size=1, max_size=3))
def test_any_lm_override_gives_a_spec_or_one_line_naming_a_field(overrides):
    check_spec_or_one_line(LM_SPEC, overrides)


def check_spec_or_one_line(reference, overrides) -> None:
    items = [f"{path}={json.dumps(value)}" for path, value in overrides]
    try:
        load_spec(reference, items)
    except SpecError as err:
        message = str(err)
        assert "\n" not in message and "Traceback" not in message, message
        assert ":" in message, message  # "<field path>: <reason>"
