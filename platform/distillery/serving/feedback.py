"""A/B feedback: request ids the router can later redeem for the arm that answered, in fixed
memory, and the per-arm success counts the A/B test compares."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid

from distillery.serving.routing import ARMS, two_proportion_ztest

WINDOW = 100_000  # the newest request ids that POST /v1/feedback accepts


class Feedback:
    """Ids of the router's requests and, for the newest `window` of them, the arm that gave a
    routed answer.

    An id is `<incarnation>-<n in hex>-<mac>`. The incarnation (random per router replica)
    and the counter n keep ids unique across restarts, which the request log relies on; the
    MAC (HMAC-SHA256 of n under a random per-incarnation key, 64 bits) makes ids unforgeable,
    so only answers this router gave can be rated. The arm of request n is one byte at
    n % window of a ring: 100 kB for 100,000 ids, allocated once. A dict of id -> arm would
    hold a Python object per id and keep growing until `window` ids had been issued, minutes
    into a soak, which reads as a leak in the replica's memory.
    """

    def __init__(self, window: int = WINDOW):
        self.window = window
        self.incarnation = uuid.uuid4().hex[:8]
        self.key = os.urandom(32)
        self.next = 0
        # per slot 0: nothing to redeem (not routed, or already redeemed); k: ARMS[k - 1]
        self.arms = bytearray(window)
        self.counts = {arm: [0, 0] for arm in ARMS}  # arm -> [successes, outcomes]

    def issue(self) -> tuple[int, str]:
        """A new request's number and id; it cannot be redeemed until `answered`."""
        n, self.next = self.next, self.next + 1
        self.arms[n % self.window] = 0
        return n, f"{self.incarnation}-{n:x}-{self._mac(n)}"

    def answered(self, n: int, arm: str) -> None:
        """Request n got a routed answer from `arm`: feedback on it may now be given once (if
        n is still among the newest `window` ids; its slot may already be a newer request's)."""
        if n >= self.next - self.window:
            self.arms[n % self.window] = 1 + ARMS.index(arm)

    def redeem(self, request_id: str, success: bool) -> str | None:
        """The arm that answered `request_id`, its outcome counted; None when the id is not one
        of this router's newest `window` ids, got no routed answer, or was already redeemed."""
        parts = request_id.split("-")
        if len(parts) != 3 or parts[0] != self.incarnation:
            return None
        try:
            n = int(parts[1], 16)
        except ValueError:
            return None
        if (parts[1] != f"{n:x}" or not self.next - self.window <= n < self.next
                or not hmac.compare_digest(parts[2].encode(), self._mac(n).encode())):
            return None
        code = self.arms[n % self.window]
        if not code:
            return None
        self.arms[n % self.window] = 0
        arm = ARMS[code - 1]
        self.counts[arm][0] += success
        self.counts[arm][1] += 1
        return arm

    def summary(self) -> dict:
        """Per-arm successes, outcomes and rate, and the two-proportion z-test of student
        against teacher."""
        (s_s, n_s), (s_t, n_t) = self.counts["student"], self.counts["teacher"]
        z, p = two_proportion_ztest(s_s, n_s, s_t, n_t)
        return {arm: {"successes": s, "outcomes": n, "rate": s / n if n else None}
                for arm, (s, n) in self.counts.items()} | {"z": z, "p_value": p}

    def _mac(self, n: int) -> str:
        return hmac.new(self.key, n.to_bytes(8, "big"), hashlib.sha256).hexdigest()[:16]
