"""`distillery rollout status|advance|pause|resume|rollback`: the admin API over HTTP."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from distillery.config import PipelineSpec, ServeSpec
from distillery.serving.admin import TOKEN_ENV
from distillery.serving.rollout import ACTIONS

COMMANDS = ("status", *ACTIONS)


class AdminError(RuntimeError):
    """The admin call failed; the message is one line for the user."""


def admin_call(spec: PipelineSpec, command: str, url: str | None = None) -> dict:
    """GET /admin/rollout (status) or POST /admin/rollout/<action>; the JSON answer."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise AdminError(f"{TOKEN_ENV} is not set; the admin API needs the token the app was "
                         "started with")
    serving = spec.serve or ServeSpec()
    base = (url or f"http://{serving.host}:{serving.port}").rstrip("/")
    target = f"{base}/admin/rollout" + ("" if command == "status" else f"/{command}")
    request = urllib.request.Request(target, method="GET" if command == "status" else "POST",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        try:
            message = json.load(err)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = err.reason
        raise AdminError(f"{target}: {err.code} {message}") from None
    except urllib.error.URLError as err:
        raise AdminError(f"{target}: cannot connect ({err.reason}); is `distillery serve` "
                         "running there?") from None
