"""The rollout policy (pure), its persisted state, and the serve section of the spec."""

from __future__ import annotations

import pytest

from distillery.config import RolloutSpec, SpecError, load_spec
from distillery.serving.rollout import (
    Measurement,
    check_gates,
    decide,
    initial_state,
    load_state,
    operator_action,
    percentile,
    save_state,
)
from distillery.storage import Store
from distillery.store_layout import ROLLOUT_STATE

from helpers import REFERENCE_SPEC

SPEC = RolloutSpec(steps=[5, 25, 50, 100], min_requests=100, min_seconds=60, failure_threshold=3,
                   gates={"min_agreement": 0.9, "min_agreement_samples": 20, "max_p99_ms": 50,
                          "max_error_rate": 0.01})
HEALTHY = Measurement(requests=100, student_calls=10, student_errors=0, student_p99_ms=12.0,
                      agreements=19, pairs=20)
DISAGREEING = Measurement(requests=100, student_calls=10, student_errors=0,
                          student_p99_ms=12.0, agreements=4, pairs=20)


def test_healthy_gates_promote_through_every_step_then_complete():
    state, now, weights = initial_state(SPEC, "run-1", 0.0), 0.0, []
    for _ in range(4):
        now += 60
        state, decision = decide(state, SPEC, HEALTHY, now)
        weights.append(state["weight"])
    assert weights == [25, 50, 100, 100]
    assert state["status"] == "completed"
    assert [d["action"] for d in state["decisions"]] == ["promote"] * 3 + ["complete"]


def test_promotion_waits_for_min_requests_min_time_and_data():
    state = initial_state(SPEC, "run-1", 0.0)
    few = Measurement(99, 10, 0, 12.0, 19, 20)
    no_pairs = Measurement(100, 10, 0, 12.0, 5, 5)
    for m, now in ((few, 60.0), (HEALTHY, 59.0), (no_pairs, 60.0)):
        new, decision = decide(state, SPEC, m, now)
        assert decision["action"] == "hold" and new["weight"] == 5
    assert "no data for ['agreement']" in decide(state, SPEC, no_pairs, 60.0)[1]["reason"]


def test_decisions_carry_measured_values_next_to_thresholds():
    _, decision = decide(initial_state(SPEC, "run-1", 0.0), SPEC, HEALTHY, 61.0)
    gates = {g["name"]: g for g in decision["gates"]}
    assert gates["agreement"] == {"name": "agreement", "value": 0.95, "threshold": 0.9,
                                  "ok": True}
    assert gates["p99_ms"]["value"] == 12.0 and gates["p99_ms"]["threshold"] == 50
    assert gates["error_rate"]["value"] == 0.0
    assert decision["requests"] == {"value": 100, "threshold": 100}
    assert decision["seconds"] == {"value": 61.0, "threshold": 60}
    assert (decision["from_weight"], decision["to_weight"]) == (5, 25)


def test_rollback_after_consecutive_failures_only():
    state = initial_state(SPEC, "run-1", 0.0)
    state, _ = decide(state, SPEC, HEALTHY, 60)  # 25%
    actions = []
    for i, m in enumerate([DISAGREEING, DISAGREEING, HEALTHY, DISAGREEING, DISAGREEING,
                           DISAGREEING]):
        state, decision = decide(state, SPEC, m, 70 + i)
        actions.append(decision["action"])
    # a healthy check in between resets the count
    assert actions == ["hold", "hold", "hold", "hold", "hold", "rollback"]
    assert state["status"] == "rolled_back" and state["weight"] == 0
    assert "agreement" in state["decisions"][-1]["reason"]
    # a rolled-back rollout stays put until an operator acts
    assert decide(state, SPEC, HEALTHY, 200)[0]["weight"] == 0


@pytest.mark.parametrize("failing", [
    Measurement(100, 10, 1, 12.0, 19, 20),  # error rate 0.1 > 0.01
    Measurement(100, 10, 0, 80.0, 19, 20),  # p99 80 ms > 50
    Measurement(100, 10, 0, 12.0, 19, 20, alerts=1, alerts_gate=True),  # a monitoring alert
])
def test_pause_policy_holds_the_weight(failing):
    spec = SPEC.model_copy(update={"on_failure": "pause", "failure_threshold": 1})
    state, decision = decide(initial_state(spec, "run-1", 0.0), spec, failing, 60)
    assert decision["action"] == "pause"
    assert state["status"] == "paused" and state["weight"] == 5


def test_alerts_gate_waits_for_the_first_check_and_is_skipped_when_off():
    waiting = Measurement(100, 10, 0, 12.0, 19, 20, alerts=None, alerts_gate=True)
    gate = check_gates(SPEC.gates, waiting)[-1]
    assert (gate.name, gate.value, gate.ok) == ("alerts", None, None)
    assert decide(initial_state(SPEC, "run-1", 0.0), SPEC, waiting, 60)[1]["action"] == "hold"
    quiet = Measurement(100, 10, 0, 12.0, 19, 20, alerts=0, alerts_gate=True)
    assert decide(initial_state(SPEC, "run-1", 0.0), SPEC, quiet, 60)[0]["weight"] == 25
    off = Measurement(100, 10, 0, 12.0, 19, 20, alerts=3, alerts_gate=False)
    assert "alerts" not in [c.name for c in check_gates(SPEC.gates, off)]


def test_operator_actions():
    state = initial_state(SPEC, "run-1", 0.0)
    state = operator_action(state, "advance", 1.0)
    assert (state["weight"], state["status"]) == (25, "running")
    state = operator_action(state, "pause", 2.0)
    assert state["status"] == "paused"
    assert decide(state, SPEC, HEALTHY, 100)[0]["weight"] == 25  # paused: no promotion
    state = operator_action(state, "resume", 3.0)
    assert state["status"] == "running" and state["weight"] == 25
    state = operator_action(state, "rollback", 4.0)
    assert (state["weight"], state["status"]) == (0, "rolled_back")
    state = operator_action(state, "resume", 5.0)
    assert (state["weight"], state["status"]) == (5, "running")
    assert [d["action"] for d in state["decisions"]] == ["advance", "pause", "resume",
                                                         "rollback", "resume"]
    with pytest.raises(ValueError, match="cannot resume"):
        operator_action(state, "resume", 6.0)
    with pytest.raises(ValueError, match="unknown action"):
        operator_action(state, "explode", 6.0)


def test_shadow_and_ab_modes_never_move_traffic():
    for mode, weight in (("shadow", 0), ("ab", 30)):
        spec = SPEC.model_copy(update={"mode": mode, "ab_split": 30})
        state = initial_state(spec, "run-1", 0.0)
        assert state["weight"] == weight
        assert decide(state, spec, HEALTHY, 1000)[0]["weight"] == weight
        assert decide(state, spec, DISAGREEING, 1000)[0]["weight"] == weight
        # nor can an operator turn them into a live canary, even after a rollback
        rolled_back = operator_action(state, "rollback", 1.0)
        for action in ("advance", "resume"):
            with pytest.raises(ValueError, match=f"cannot {action} a {mode} rollout"):
                operator_action(rolled_back, action, 2.0)


def test_gates_wait_without_data_and_skip_when_unset():
    empty = Measurement(0, 0, 0, None, 0, 0)
    assert [c.ok for c in check_gates(SPEC.gates, empty)] == [None, None, None]
    only_errors = SPEC.gates.model_copy(update={"min_agreement": None, "max_p99_ms": None})
    assert [c.name for c in check_gates(only_errors, empty)] == ["error_rate"]


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 99) == 99 and percentile(values, 50) == 50
    assert percentile([7.0], 99) == 7.0


def test_state_round_trips_and_resumes(tmp_path):
    store = Store(str(tmp_path))
    state = operator_action(initial_state(SPEC, "run-1", 0.0), "advance", 1.0)
    save_state(store, state)
    loaded, note = load_state(store, SPEC, "run-1", 2.0)
    assert loaded == state and "resuming" in note
    # another student (or other steps) starts a new rollout
    fresh, note = load_state(store, SPEC, "run-2", 2.0)
    assert fresh["weight"] == 5 and fresh["student"] == "run-2" and "new rollout" in note


@pytest.mark.parametrize("content", [b"{oops", b"[]", b'{"student": "run-1"}',
                                     b'{"student": "run-1", "mode": "canary", "steps": [5, 100],'
                                     b' "status": "running", "step": 7, "weight": 5,'
                                     b' "step_started": 0, "consecutive_failures": 0,'
                                     b' "decisions": []}'])
def test_corrupted_state_sends_everything_to_the_teacher_and_says_why(tmp_path, content):
    store = Store(str(tmp_path))
    store.write_bytes(content, *ROLLOUT_STATE)
    state, note = load_state(store, SPEC, "run-1", 0.0)
    assert (state["weight"], state["status"]) == (0, "paused")
    assert "unreadable" in note and "rollout-state.json" in note and state["error"] == note
    assert decide(state, SPEC, HEALTHY, 100)[0]["weight"] == 0


@pytest.mark.parametrize("override,message", [
    ("serve.rollout.steps=[5,50,25,100]", "serve.rollout.steps: must be strictly increasing"),
    ("serve.rollout.steps=[5,50]", "serve.rollout.steps: must end at 100"),
    ("serve.rollout.steps=[0,50,100]", "serve.rollout.steps.0: must be > 0"),
    ("serve.rollout.steps=[5,50,150]", "serve.rollout.steps.2: must be <= 100"),
    ("serve.rollout.steps=[]", "serve.rollout.steps:"),
    ("serve.rollout.shadow_fraction=1.5", "serve.rollout.shadow_fraction: must be <= 1"),
    ("serve.rollout.on_failure=explode", "serve.rollout.on_failure:"),
    ("serve.rollout.gates.min_agreement=2", "serve.rollout.gates.min_agreement: must be <= 1"),
    ("serve.teacher_deployment.autoscaling={min_replicas: 3, max_replicas: 2}",
     "serve.teacher_deployment.autoscaling: max_replicas 2 must be >= min_replicas 3"),
    ("serve.port=70000", "serve.port: must be < 65536"),
    ("serve.bogus=1", "serve.bogus: unknown key"),
])
def test_serve_section_is_validated_with_field_paths(override, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[")):
        load_spec(REFERENCE_SPEC, [override])


@pytest.mark.parametrize("run_id", ["../teachers/cnn-teacher", ".hidden", "a/b", ""])
def test_served_student_is_one_store_name(run_id):
    with pytest.raises(SpecError, match="serve.student: String should match pattern"):
        load_spec(REFERENCE_SPEC, [f"serve.student={run_id}"])


def test_serve_section_defaults():
    spec = load_spec(REFERENCE_SPEC, ["serve.port=8123"])
    assert spec.serve.port == 8123 and spec.serve.rollout.steps == [5, 25, 50, 100]
    assert load_spec(REFERENCE_SPEC).serve is None


def test_shipped_serve_configs_validate():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from distillery.config import section_override

    from helpers import ROOT

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve" / "mnist1d.yaml")
                                                             .read_text()))
    (app,) = config.applications
    assert app.import_path == "distillery.serving.app:app_builder"
    serving = section_override("serve", ROOT / app.args["serving"], "serving")
    spec = load_spec(ROOT / app.args["config"], [serving])
    assert spec.serve.rollout.steps == [5, 25, 50, 100]
    assert spec.serve.student_deployment.autoscaling.max_replicas == 2
