"""A/B feedback: request ids that carry, signed, the arm that answered them, so that any router
replica can take the feedback on an answer another gave; and the once-only, per-arm success
counts the A/B test compares, kept in one place (the rollout coordinator).

An id is `<incarnation>-<n in hex>-<arm><issued in hex>-<mac>`: the incarnation (random per
router replica) and its counter n keep ids unique across replicas and restarts, which the
request log relies on; `arm` is `s` or `t` for a routed answer (only those can be rated) and `d`
for a model asked by name; `issued` is the answer's time in whole seconds; the MAC
(HMAC-SHA256 under the app's key, shared by its router replicas, 64 bits) makes ids
unforgeable. Feedback is taken once per id, within TTL_S of the answer: the coordinator keeps
the redeemed ids of the last TTL_S, so its memory follows the feedback rate, not the request
rate.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

from distillery.serving.routing import ARMS, two_proportion_ztest

TTL_S = 3600  # how long after an answer feedback on it is taken
CODES = {"student": "s", "teacher": "t", None: "d"}


class Tokens:
    """A router replica's request ids, signed with the app's `key`."""

    def __init__(self, key: bytes):
        self.key = key
        self.incarnation = uuid.uuid4().hex[:8]
        self.next = 0

    def number(self) -> str:
        """A new request's unique prefix; `issue` completes its id once the arm is known."""
        n, self.next = self.next, self.next + 1
        return f"{self.incarnation}-{n:x}"

    def issue(self, number: str, routed_arm: str | None, now: float | None = None) -> str:
        """The id of request `number`, answered by `routed_arm` (None: not routed)."""
        issued = int(time.time() if now is None else now)
        body = f"{number}-{CODES[routed_arm]}{issued:x}"
        return f"{body}-{self._mac(body)}"

    def verify(self, request_id: str, now: float | None = None) -> str | None:
        """The arm of a routed answer this app gave within TTL_S, or None."""
        body, _, mac = request_id.rpartition("-")
        parts = body.split("-")
        if len(parts) != 3 or not parts[2] or parts[2][0] not in "st":
            return None
        try:
            issued = int(parts[2][1:], 16)
        except ValueError:
            return None
        age = (time.time() if now is None else now) - issued
        if not (hmac.compare_digest(mac.encode(), self._mac(body).encode()) and
                -60 <= age <= TTL_S):
            return None
        return "student" if parts[2][0] == "s" else "teacher"

    def _mac(self, body: str) -> str:
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()[:16]


class Outcomes:
    """Per-arm A/B outcomes, each request id counted once (ids redeemed in the last TTL_S are
    kept; an older id no longer verifies)."""

    def __init__(self):
        self.counts = {arm: [0, 0] for arm in ARMS}  # arm -> [successes, outcomes]
        self.redeemed: dict[str, float] = {}  # request id -> when it expires, oldest first

    def redeem(self, request_id: str, arm: str, success: bool, now: float | None = None
               ) -> bool:
        """Count a verified id's outcome; False when it was counted already."""
        now = time.time() if now is None else now
        while self.redeemed and next(iter(self.redeemed.values())) < now:
            del self.redeemed[next(iter(self.redeemed))]
        if request_id in self.redeemed:
            return False
        self.redeemed[request_id] = now + TTL_S + 60
        self.counts[arm][0] += success
        self.counts[arm][1] += 1
        return True

    def summary(self) -> dict:
        """Per-arm successes, outcomes and rate, and the two-proportion z-test of student
        against teacher."""
        (s_s, n_s), (s_t, n_t) = self.counts["student"], self.counts["teacher"]
        z, p = two_proportion_ztest(s_s, n_s, s_t, n_t)
        return {arm: {"successes": s, "outcomes": n, "rate": s / n if n else None}
                for arm, (s, n) in self.counts.items()} | {"z": z, "p_value": p}
