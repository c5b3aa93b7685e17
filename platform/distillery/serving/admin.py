"""Bearer-token check of the /admin/ endpoints.

The token comes from DISTILLERY_ADMIN_TOKEN on the machine that builds the app; only its
SHA-256 travels to the router replica (deployment arguments show up in Ray's dashboard), and a
presented token is compared by digest in constant time. No token set: admin is disabled and
every /admin/ call says so. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os

TOKEN_ENV = "DISTILLERY_ADMIN_TOKEN"


def token_digest(token: str | None = None) -> str | None:
    """SHA-256 hex of the admin token (from the environment by default); None when unset."""
    token = os.environ.get(TOKEN_ENV) if token is None else token
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def authorize(authorization: str | None, digest: str | None) -> tuple[int, str] | None:
    """None if `Authorization: Bearer <token>` matches; else (HTTP status, message)."""
    if digest is None:
        return 403, (f"admin API disabled: {TOKEN_ENV} was not set when the app was built")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return 401, "missing bearer token (Authorization: Bearer <token>)"
    if not hmac.compare_digest(hashlib.sha256(token.strip().encode()).hexdigest(), digest):
        return 401, "invalid token"
    return None
