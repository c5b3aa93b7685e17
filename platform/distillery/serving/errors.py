"""The client error every request check raises, rendered by the router in each protocol's
error shape."""

from __future__ import annotations


class RequestError(ValueError):
    """A client error: HTTP `status` (4xx), a stable machine `code` and a message for people."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
