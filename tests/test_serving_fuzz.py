"""Hostile input from the app's own OpenAPI schema: schemathesis generates requests for every
operation, both fitting the schema (positive) and breaking it (negative), against the Serve app
on the session's local Ray. No response may be a 5xx, and every response must match the
schema the app documents (status and body)."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from distillery.serving.rollout import ACTIONS

from helpers import add_students, deploy_app, free_port, tiny_spec

TOKEN = "fuzz-token"
EXAMPLES = 12  # per operation, mode and path choice: ~400 requests in all
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def test_generated_requests_get_no_5xx_and_responses_match_the_schema(store_copy, local_ray):
    from ray import serve

    add_students(store_copy)
    spec = tiny_spec(store_copy, "serve.student=good", "monitor.check_interval_s=null",
                     "serve.rollout.interval_s=0.5", "serve.rollout.min_seconds=0",
                     "serve.rollout.min_requests=5")
    real = {"name": [spec.name, "student"], "action": list(ACTIONS)}
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deploy_app(spec, port, TOKEN)
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 12
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for operation in operations:
            # a random {name} or {action} is a 404 before anything else: also the real ones
            fixed = [None, *({key: value} for key, values in real.items()
                             if f"{{{key}}}" in operation.path for value in values)]
            # only a body can break the schema: a path parameter is any string
            modes = list(GenerationMode) if len(operation.body) else [GenerationMode.POSITIVE]
            for mode in modes:
                for path_parameters in fixed:
                    strategy = operation.as_strategy(mode, path_parameters=path_parameters)

                    @settings(max_examples=EXAMPLES, deadline=None, database=None,
                              suppress_health_check=list(HealthCheck))
                    @given(case=strategy)
                    def check(case):
                        case.call_and_validate(base_url=base_url, headers=headers,
                                               checks=CHECKS, timeout=30)

                    check()
        # the app still answers after the fuzzing
        answer = httpx.post(f"{base_url}/v1/models/{spec.name}:predict",
                            json={"instances": [[0.0] * 40]}, timeout=30)
        assert answer.status_code == 200
        # no route for a name with a slash: the protocol's error shape, not FastAPI's
        assert httpx.get(f"{base_url}/v1/models/a/b").json()["error"]["code"] == "not_found"
        assert isinstance(httpx.get(f"{base_url}/v2/models/a/b/c").json()["error"], str)
    finally:
        serve.shutdown()
