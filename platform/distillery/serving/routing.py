"""Which model answers a request, and whether A/B arms differ: pure functions.

Sticky assignment hashes the request key into one of 10,000 buckets; the student takes the
buckets below weight x 100. A key therefore sees one model at a given weight, and a key on the
student stays there as the weight rises (the buckets below 5% are also below 25%).
"""

from __future__ import annotations

import hashlib
import math

ARMS = ("teacher", "student")
BUCKETS = 10_000


def bucket(key: str) -> int:
    """Stable bucket in [0, BUCKETS) of a request key (same in every process and release)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % BUCKETS


def sticky_arm(key: str, student_percent: float) -> str:
    """`student` for the share `student_percent` (0-100) of keys, else `teacher`."""
    return "student" if bucket(key) < student_percent / 100 * BUCKETS else "teacher"


def two_proportion_ztest(successes_a: int, n_a: int, successes_b: int,
                         n_b: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of H0: p_a = p_b.

    z = (p_a - p_b) / sqrt(p (1 - p) (1/n_a + 1/n_b)), p = (s_a + s_b) / (n_a + n_b);
    two-sided p-value = erfc(|z| / sqrt 2). Returns (z, p); (0, 1) when undefined (an empty
    arm, or every outcome equal).
    """
    if n_a == 0 or n_b == 0:
        return 0.0, 1.0
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance == 0:
        return 0.0, 1.0
    z = (successes_a / n_a - successes_b / n_b) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2))
