"""Sticky canary assignment, the A/B significance test and the admin token check."""

from __future__ import annotations

import math

import pytest

from distillery.serving.admin import authorize, token_digest
from distillery.serving.routing import sticky_arm, two_proportion_ztest


def test_same_key_always_gets_the_same_arm():
    for key in ("alice", "bob", "user-17"):
        assert len({sticky_arm(key, 25) for _ in range(20)}) == 1


@pytest.mark.parametrize("weight", [5, 25, 50])
def test_observed_split_is_within_binomial_tolerance_of_the_weight(weight):
    n = 20_000
    students = sum(sticky_arm(f"user-{i}", weight) == "student" for i in range(n))
    p = weight / 100
    assert abs(students / n - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 sigma


def test_a_student_key_stays_on_the_student_as_the_weight_rises():
    keys = [f"k{i}" for i in range(2000)]
    at_5 = {k for k in keys if sticky_arm(k, 5) == "student"}
    at_25 = {k for k in keys if sticky_arm(k, 25) == "student"}
    assert at_5 <= at_25
    assert all(sticky_arm(k, 0) == "teacher" for k in keys)
    assert all(sticky_arm(k, 100) == "student" for k in keys)


def test_two_proportion_ztest_matches_a_hand_computed_value():
    # p_a = 0.6, p_b = 0.5, pooled 0.55: z = 0.1 / sqrt(0.2475 * 0.02) = 1.42134
    z, p = two_proportion_ztest(60, 100, 50, 100)
    assert z == pytest.approx(1.421338, abs=1e-6)
    assert p == pytest.approx(0.155218, abs=1e-6)
    z, p = two_proportion_ztest(500, 1000, 400, 1000)
    assert z == pytest.approx(4.494666, abs=1e-6) and p < 1e-5


def test_two_proportion_ztest_identities():
    assert two_proportion_ztest(30, 100, 30, 100) == (0.0, 1.0)
    za, pa = two_proportion_ztest(40, 100, 60, 100)
    zb, pb = two_proportion_ztest(60, 100, 40, 100)
    assert za == -zb and pa == pb
    assert two_proportion_ztest(0, 0, 5, 10) == (0.0, 1.0)  # an empty arm
    assert two_proportion_ztest(10, 10, 20, 20) == (0.0, 1.0)  # every outcome a success


def test_admin_token_is_checked_by_digest():
    digest = token_digest("s3cret")
    assert authorize("Bearer s3cret", digest) is None
    assert authorize("bearer s3cret", digest) is None
    assert authorize(None, digest)[0] == 401
    assert authorize("Bearer wrong", digest)[0] == 401
    assert authorize("Basic s3cret", digest)[0] == 401
    status, message = authorize("Bearer s3cret", None)
    assert status == 403 and "DISTILLERY_ADMIN_TOKEN" in message


def test_admin_token_from_the_environment(monkeypatch):
    monkeypatch.delenv("DISTILLERY_ADMIN_TOKEN", raising=False)
    assert token_digest() is None
    monkeypatch.setenv("DISTILLERY_ADMIN_TOKEN", "abc")
    assert token_digest() == token_digest("abc") != token_digest("abd")
