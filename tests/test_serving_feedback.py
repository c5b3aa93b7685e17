"""Feedback ids: signed with the app's key, so any router replica verifies another's; only a
routed answer's, within TTL_S, never forged; counted once by the coordinator's outcomes."""

from __future__ import annotations

import pytest

from distillery.serving.feedback import TTL_S, Outcomes, Tokens

KEY = b"k" * 32
NOW = 1_800_000_000.0


def test_any_replica_of_the_app_verifies_a_routed_answers_id_and_it_counts_once():
    a, b = Tokens(KEY), Tokens(KEY)  # two router replicas of one app
    request_id = a.issue(a.number(), "student", NOW)
    assert b.verify(request_id, NOW + 5) == "student"
    assert Tokens(b"x" * 32).verify(request_id, NOW + 5) is None  # another app's key
    outcomes = Outcomes()
    assert outcomes.redeem(request_id, "student", True, NOW + 5)
    assert not outcomes.redeem(request_id, "student", True, NOW + 6)  # once only
    assert outcomes.counts == {"teacher": [0, 0], "student": [1, 1]}


def test_ids_are_unique_across_requests_and_replicas():
    a, b = Tokens(KEY), Tokens(KEY)
    ids = [t.issue(t.number(), "teacher", NOW) for t in (a, a, a, b, b, b)]
    assert len(set(ids)) == 6


def test_a_model_asked_by_name_or_an_old_answer_cannot_be_rated():
    tokens = Tokens(KEY)
    assert tokens.verify(tokens.issue(tokens.number(), None, NOW), NOW) is None
    old = tokens.issue(tokens.number(), "teacher", NOW)
    assert tokens.verify(old, NOW + TTL_S) == "teacher"
    assert tokens.verify(old, NOW + TTL_S + 1) is None


def test_redeemed_ids_are_kept_only_as_long_as_they_verify():
    outcomes = Outcomes()
    assert outcomes.redeem("a", "student", True, NOW)
    assert outcomes.redeem("b", "teacher", False, NOW + TTL_S)
    assert outcomes.redeem("c", "teacher", False, NOW + TTL_S + 61)  # "a" expired, dropped
    assert list(outcomes.redeemed) == ["b", "c"]


@pytest.mark.parametrize("mangle", [
    lambda i: i[:-1] + ("0" if i[-1] != "0" else "1"),  # a wrong MAC
    lambda i: i.replace("-s", "-t"),  # another arm, this one's MAC
    lambda i: i.replace("-0-", "-1-"),  # another request's number
    lambda i: i.split("-", 1)[1],  # pieces missing
    lambda i: i + "-0",
    lambda i: "",
    lambda i: i[:-1] + "\u00e9",  # not ASCII: compare_digest on str would raise
])
def test_a_forged_or_malformed_id_is_refused(mangle):
    tokens = Tokens(KEY)
    request_id = tokens.issue(tokens.number(), "student", NOW)
    assert tokens.verify(mangle(request_id), NOW) is None
    assert tokens.verify(request_id, NOW) == "student"


def test_summary_compares_the_arms():
    outcomes = Outcomes()
    for arm, results in (("student", [True] * 30 + [False] * 10),
                         ("teacher", [True] * 20 + [False] * 20)):
        for i, success in enumerate(results):
            outcomes.redeem(f"{arm}-{i}", arm, success, NOW)
    summary = outcomes.summary()
    assert summary["student"] == {"successes": 30, "outcomes": 40, "rate": 0.75}
    assert summary["teacher"] == {"successes": 20, "outcomes": 40, "rate": 0.5}
    assert summary["z"] == pytest.approx(2.3094, abs=1e-4)  # 0.25 / sqrt(0.625*0.375*2/40)
    assert 0.02 < summary["p_value"] < 0.022
