"""The rollout policy: how much traffic the student gets, and when that changes.

Pure functions from (state, spec, measurement, now) to (state, decision), so every rule is
unit-tested without a server; the router calls `decide` every `interval_s` and persists the
state in the store at serve/rollout-state.json (atomic write), so a restarted app resumes at
the same step. Every decision carries each gate's measured value next to its threshold.

State (JSON): student (run id the rollout is about), mode, steps, status (running | paused |
completed | rolled_back | observing | ab), step (index into steps, -1 = none yet), weight
(percent of traffic to the student), step_started (unix time: min_seconds survives a restart;
requests are counted again after one), consecutive_failures, decisions (the latest 100).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

from distillery.config import RolloutGates, RolloutSpec
from distillery.storage import Store
from distillery.store_layout import ROLLOUT_STATE

HISTORY = 100
STATUSES = ("running", "paused", "completed", "rolled_back", "observing", "ab")
ACTIONS = ("advance", "pause", "resume", "rollback")


@dataclass(frozen=True)
class Measurement:
    """What the router saw since the current step began."""

    requests: int  # routed requests, either model
    student_calls: int  # the student's answers and shadow calls
    student_errors: int  # of those, the ones that raised
    student_p99_ms: float | None  # None: no student calls yet
    agreements: int  # shadowed pairs where student and teacher predicted the same class
    pairs: int  # shadowed pairs
    alerts: int | None = None  # active monitoring alerts; None: no check has run yet
    alerts_gate: bool = False  # whether active alerts fail the rollout (monitor.alerts)


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float | None  # None: not enough data yet, the gate waits
    threshold: float
    ok: bool | None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def check_gates(gates: RolloutGates, m: Measurement) -> list[GateCheck]:
    checks = []
    if gates.min_agreement is not None:
        value = m.agreements / m.pairs if m.pairs >= gates.min_agreement_samples else None
        checks.append(GateCheck("agreement", value, gates.min_agreement,
                                None if value is None else value >= gates.min_agreement))
    if gates.max_p99_ms is not None:
        value = m.student_p99_ms
        checks.append(GateCheck("p99_ms", value, gates.max_p99_ms,
                                None if value is None else value <= gates.max_p99_ms))
    if gates.max_error_rate is not None:
        value = m.student_errors / m.student_calls if m.student_calls else None
        checks.append(GateCheck("error_rate", value, gates.max_error_rate,
                                None if value is None else value <= gates.max_error_rate))
    if m.alerts_gate:
        checks.append(GateCheck("alerts", m.alerts, 0, None if m.alerts is None
                                else m.alerts == 0))
    return checks


def initial_state(spec: RolloutSpec, student: str, now: float) -> dict:
    status, weight, step = {"canary": ("running", spec.steps[0], 0),
                            "shadow": ("observing", 0.0, -1),
                            "ab": ("ab", spec.ab_split, -1)}[spec.mode]
    return {"student": student, "mode": spec.mode, "steps": list(spec.steps), "status": status,
            "step": step, "weight": weight, "step_started": now,
            "consecutive_failures": 0, "decisions": []}


def safe_state(spec: RolloutSpec, student: str, now: float, error: str) -> dict:
    """All traffic to the teacher and nothing automatic, until an operator acts."""
    return {**initial_state(spec, student, now), "status": "paused", "step": -1, "weight": 0.0,
            "error": error}


def decide(state: dict, spec: RolloutSpec, m: Measurement, now: float) -> tuple[dict, dict]:
    """One gate evaluation: promote, hold, or (after failure_threshold consecutive failed
    checks) rollback or pause. Only a running canary moves."""
    checks = check_gates(spec.gates, m)
    if state["status"] != "running":
        return state, _decision(state, state, "hold", f"status {state['status']}", checks, m,
                                spec, now)
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        failures = state["consecutive_failures"] + 1
        if failures >= spec.failure_threshold:
            action = spec.on_failure
            new = _moved(state, now, status="rolled_back" if action == "rollback" else "paused",
                         **({"step": -1, "weight": 0.0} if action == "rollback" else {}))
            new["consecutive_failures"] = failures
        else:
            action, new = "hold", {**state, "consecutive_failures": failures}
        reason = f"failed {failed} ({failures}/{spec.failure_threshold} consecutive)"
        return _logged(new, _decision(state, new, action, reason, checks, m, spec, now))
    state = {**state, "consecutive_failures": 0}
    pending = [c.name for c in checks if c.ok is None]
    elapsed = now - state["step_started"]
    requests = m.requests
    if pending or requests < spec.min_requests or elapsed < spec.min_seconds:
        reason = (f"waiting: {requests}/{spec.min_requests} requests, "
                  f"{elapsed:.1f}/{spec.min_seconds} s" + (f", no data for {pending}"
                                                           if pending else ""))
        return state, _decision(state, state, "hold", reason, checks, m, spec, now)
    new = promote(state, now)
    return _logged(new, _decision(state, new, "promote" if new["status"] == "running"
                                  else "complete", "gates healthy", checks, m, spec, now))


def promote(state: dict, now: float) -> dict:
    """The next step; past the last (100%) the rollout is completed."""
    steps, step = state["steps"], state["step"]
    if step + 1 >= len(steps):
        return _moved(state, now, status="completed")
    return _moved(state, now, status="running", step=step + 1, weight=steps[step + 1])


def operator_action(state: dict, action: str, now: float) -> dict:
    """advance | pause | resume | rollback from the admin API; returns the new state with the
    decision logged."""
    if action in ("advance", "resume") and state["mode"] != "canary":
        # only a canary moves traffic in steps; doing it to a shadow or A/B rollout would put
        # the student live without the canary's gates
        raise ValueError(f"cannot {action} a {state['mode']} rollout: only canary rollouts "
                         "move traffic in steps")
    if action == "advance":
        if state["status"] not in ("running", "paused", "rolled_back"):
            raise ValueError(f"cannot advance a rollout that is {state['status']}")
        new = promote(state, now)
    elif action == "pause":
        if state["status"] != "running":
            raise ValueError(f"cannot pause a rollout that is {state['status']}")
        new = _moved(state, now, status="paused", reset_window=False)
    elif action == "resume":
        if state["status"] not in ("paused", "rolled_back"):
            raise ValueError(f"cannot resume a rollout that is {state['status']}")
        new = (_moved(state, now, status="running", step=0, weight=state["steps"][0])
               if state["step"] < 0 else _moved(state, now, status="running", reset_window=False))
    elif action == "rollback":
        new = _moved(state, now, status="rolled_back", step=-1, weight=0.0)
    else:
        raise ValueError(f"unknown action {action!r}; valid: {', '.join(ACTIONS)}")
    new.pop("error", None)
    decision = {"time": _iso(now), "action": action, "by": "operator",
                "from_weight": state["weight"], "to_weight": new["weight"],
                "status": new["status"]}
    return _logged(new, decision)[0]


def _moved(state: dict, now: float, *, reset_window: bool = True, **changes) -> dict:
    new = {**state, **changes, "consecutive_failures": 0}
    if reset_window:
        new["step_started"] = now
    return new


def _decision(old: dict, new: dict, action: str, reason: str, checks: list[GateCheck],
              m: Measurement, spec: RolloutSpec, now: float) -> dict:
    return {"time": _iso(now), "action": action, "reason": reason,
            "from_weight": old["weight"], "to_weight": new["weight"], "status": new["status"],
            "gates": [asdict(c) for c in checks],
            "requests": {"value": m.requests,
                         "threshold": spec.min_requests},
            "seconds": {"value": round(now - old["step_started"], 3),
                        "threshold": spec.min_seconds}}


def _logged(state: dict, decision: dict) -> tuple[dict, dict]:
    return {**state, "decisions": [*state["decisions"], decision][-HISTORY:]}, decision


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


# ---------------------------------------------------------------- persistence

def load_state(store: Store, spec: RolloutSpec, student: str, now: float) -> tuple[dict, str]:
    """The persisted state for this student and rollout spec, or a fresh one; a state that
    cannot be read gives `safe_state` (all traffic to the teacher, paused). Returns (state,
    a one-line note saying which)."""
    if not store.exists(*ROLLOUT_STATE):
        return initial_state(spec, student, now), "no rollout state; starting a new rollout"
    location = store.uri(*ROLLOUT_STATE)
    try:
        state = json.loads(store.read_bytes(*ROLLOUT_STATE))
        check_state(state)
    except (OSError, ValueError, UnicodeDecodeError) as err:  # OSError: e.g. a directory there
        note = (f"rollout state {location} is unreadable ({err}); serving everything from the "
                "teacher, paused: fix or delete the file, or POST /admin/rollout/resume")
        return safe_state(spec, student, now, note), note
    if (state["student"], state["mode"], state["steps"]) != (student, spec.mode,
                                                              list(spec.steps)):
        return initial_state(spec, student, now), (
            f"rollout state {location} is for student {state['student']} ({state['mode']}, "
            f"steps {state['steps']}); starting a new rollout of {student}")
    return state, (f"resuming the rollout of {student} from {location}: {state['status']} at "
                   f"{state['weight']}%")


def save_state(store: Store, state: dict) -> None:
    store.write_json(state, *ROLLOUT_STATE)


def check_state(state: object) -> None:
    """Raise ValueError naming what is wrong with a parsed state."""
    if not isinstance(state, dict):
        raise ValueError(f"expected a JSON object, got {type(state).__name__}")
    types = {"student": str, "mode": str, "steps": list, "status": str, "step": int,
             "weight": (int, float), "step_started": (int, float), "consecutive_failures": int,
             "decisions": list}
    for key, kind in types.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise ValueError(f"{key}: missing or not {getattr(kind, '__name__', 'a number')}")
    if state["status"] not in STATUSES:
        raise ValueError(f"status: {state['status']!r} is not one of {STATUSES}")
    if not 0 <= state["weight"] <= 100:
        raise ValueError(f"weight: {state['weight']} is not within 0-100")
    if not -1 <= state["step"] < len(state["steps"]):
        raise ValueError(f"step: {state['step']} is outside steps {state['steps']}")
