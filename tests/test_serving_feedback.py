"""The router's feedback ids: redeemable once, for the arm that answered, only while among the
newest `window` requests, and never forged."""

from __future__ import annotations

import pytest

from distillery.serving.feedback import Feedback


def test_an_answered_id_redeems_once_for_its_arm():
    fb = Feedback()
    n, request_id = fb.issue()
    assert fb.redeem(request_id, True) is None  # no routed answer yet
    fb.answered(n, "student")
    assert fb.redeem(request_id, True) == "student"
    assert fb.redeem(request_id, True) is None  # once only
    assert fb.counts == {"teacher": [0, 0], "student": [1, 1]}


def test_ids_are_unique_across_requests_and_incarnations():
    a, b = Feedback(), Feedback()
    ids = [a.issue()[1] for _ in range(3)] + [b.issue()[1] for _ in range(3)]
    assert len(set(ids)) == 6
    n, request_id = a.issue()
    a.answered(n, "teacher")
    assert b.redeem(request_id, True) is None  # another router's id
    assert a.redeem(request_id, False) == "teacher"


def test_only_the_newest_window_of_ids_redeems():
    fb = Feedback(window=4)
    issued = [fb.issue() for _ in range(6)]
    for n, _ in issued[2:]:
        fb.answered(n, "student")
    for n, _ in issued[:2]:  # answered after 4 newer ids: their slots are those ids' now
        fb.answered(n, "teacher")
    assert [fb.redeem(request_id, True) for _, request_id in issued] == [
        None, None, "student", "student", "student", "student"]


@pytest.mark.parametrize("mangle", [
    lambda i: i[:-1] + ("0" if i[-1] != "0" else "1"),  # a wrong MAC
    lambda i: i.replace("-0-", "-1-"),  # another request's number, this one's MAC
    lambda i: i.replace("-0-", "-00-"),  # the same number, spelled otherwise
    lambda i: i.replace("-0-", "-+0-"),
    lambda i: i.split("-", 1)[1],  # pieces missing
    lambda i: i + "-0",
    lambda i: "",
    lambda i: i[:-1] + "\u00e9",  # not ASCII: compare_digest on str would raise
])
def test_a_forged_or_malformed_id_is_refused(mangle):
    fb = Feedback()
    for _ in range(2):
        n, _ = fb.issue()
        fb.answered(n, "student")
    request_id = f"{fb.incarnation}-0-{fb._mac(0)}"
    assert fb.redeem(mangle(request_id), True) is None
    assert fb.redeem(request_id, True) == "student"


def test_summary_compares_the_arms():
    fb = Feedback()
    for arm, outcomes in (("student", [True] * 30 + [False] * 10),
                          ("teacher", [True] * 20 + [False] * 20)):
        for success in outcomes:
            n, request_id = fb.issue()
            fb.answered(n, arm)
            fb.redeem(request_id, success)
    summary = fb.summary()
    assert summary["student"] == {"successes": 30, "outcomes": 40, "rate": 0.75}
    assert summary["teacher"] == {"successes": 20, "outcomes": 40, "rate": 0.5}
    assert summary["z"] == pytest.approx(2.3094, abs=1e-4)  # 0.25 / sqrt(0.625*0.375*2/40)
    assert 0.02 < summary["p_value"] < 0.022
