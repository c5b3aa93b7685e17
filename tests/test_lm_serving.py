"""Causal-LM serving: the decode loop against transformers' own `generate`, request validation
as pure functions, and the Serve app on the session's local Ray driven by a real HTTP client.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distillery.lm.artifacts import lm_card, save_lm
from distillery.lm.bpe import train_byte_level_bpe
from distillery.serving.lm_deployments import generate_ids
from distillery.serving.lm_schema import (
    GenerateLimits,
    GenerateRequest,
    check_prompt_length,
    parse_generate,
)
from distillery.serving.schema import RequestError
from distillery.storage import Store

from helpers import free_port

APP, PREFIX = "lm-serving-test", "/lm-serving-test"  # beside, never over, other tests' apps
MODELS = {"teacher": ("teachers", "tiny-gpt2", "fp0"), "student": ("students", "run-1")}
LIMITS = GenerateLimits(max_new_tokens=16, max_prompt_tokens=40, max_body_bytes=10_000)
PROMPT = "def decode(self, s"


def tiny_gpt2(vocab_size: int, n_layer: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, n_positions=64,
                                      vocab_size=vocab_size, bos_token_id=0,
                                      eos_token_id=0)).eval()


@pytest.fixture(scope="module")
def lm_store(tmp_path_factory):
    """A store with a 300-token BPE (json's source) and two tiny random GPT-2s saved by
    save_lm: ({name: (model, tokenizer)}, store root)."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    tokenizer = train_byte_level_bpe(
        [p.read_text() for p in sorted(Path(json.__file__).parent.glob("*.py"))], 300)
    root = str(tmp_path_factory.mktemp("lm-store"))
    models = {}
    for seed, (name, parts) in enumerate(MODELS.items()):
        model = tiny_gpt2(len(tokenizer), n_layer=2 - seed, seed=seed)
        save_lm(Store(root), parts, model, tokenizer, lm_card(model, role=name))
        models[name] = (model, tokenizer)
    return models, root


# ---------------------------------------------------------------- the decode loop


def test_greedy_decoding_matches_transformers_generate_and_stops_after_eos(lm_store):
    model, tokenizer = lm_store[0]["teacher"]
    prompt = tokenizer.encode(PROMPT)
    with torch.inference_mode():  # stops after id 0, the model's EOS, if it comes
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                  pad_token_id=0)[0, len(prompt):].tolist()
    assert generate_ids(model, prompt, 20, 0.0, None, eos_id=0) == expected
    unended = generate_ids(model, prompt, 20, 0.0, None, eos_id=None)
    assert len(unended) == 20 and unended[:len(expected)] == expected
    # any id as the EOS: the loop stops right after its first occurrence
    eos = unended[5]
    assert generate_ids(model, prompt, 20, 0.0, None, eos_id=eos) == (
        unended[:unended.index(eos) + 1])


def test_sampling_follows_the_generator_seed(lm_store):
    model, tokenizer = lm_store[0]["teacher"]
    prompt = tokenizer.encode(PROMPT)

    def sample(seed: int) -> list[int]:
        return generate_ids(model, prompt, 16, 1.5, torch.Generator().manual_seed(seed), None)

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)  # 16 draws from ~300 near-uniform ids: equal is ~impossible


# ---------------------------------------------------------------- request validation

BAD_BODIES = [  # (body, status, code)
    (b"", 400, "empty"),
    (b"{not json", 400, "invalid_json"),
    (b"[1]", 400, "invalid_request"),
    (b'{"prompt": "x", "seed": 1' + b"0" * 5000 + b"}", 400, "invalid_json"),  # > 4300 digits
    (b'{"max_new_tokens": 3}', 400, "missing_key"),
    (b'{"prompt": "x", "top_k": 5}', 400, "unknown_field"),
    (b'{"prompt": 5}', 400, "wrong_type"),
    (b'{"prompt": ""}', 400, "empty_prompt"),
    (b'{"prompt": " \\n\\t"}', 400, "empty_prompt"),
    (b'{"prompt": "a\\ud800b"}', 400, "invalid_text"),
    (b'{"prompt": "x", "max_new_tokens": 0}', 400, "out_of_range"),
    (b'{"prompt": "x", "max_new_tokens": 17}', 400, "out_of_range"),
    (b'{"prompt": "x", "max_new_tokens": "5"}', 400, "wrong_type"),
    (b'{"prompt": "x", "max_new_tokens": true}', 400, "wrong_type"),
    (b'{"prompt": "x", "max_new_tokens": 2.0}', 400, "wrong_type"),
    (b'{"prompt": "x", "temperature": -0.1}', 400, "out_of_range"),
    (b'{"prompt": "x", "temperature": 2.5}', 400, "out_of_range"),
    (b'{"prompt": "x", "temperature": 1e-40}', 400, "out_of_range"),
    (b'{"prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}", 400, "invalid_json"),
    (b'{"prompt": "x", "temperature": NaN}', 400, "out_of_range"),
    (b'{"prompt": "x", "temperature": "hot"}', 400, "wrong_type"),
    (b'{"prompt": "x", "seed": -1}', 400, "out_of_range"),
    (b'{"prompt": "x", "seed": 1.5}', 400, "wrong_type"),
    (b'{"prompt": "x", "seed": null}', 400, "wrong_type"),
    (json.dumps({"prompt": "x" * 10_000}).encode(), 413, "body_too_large"),
]


@pytest.mark.parametrize("body,status,code", BAD_BODIES)
def test_bad_bodies_are_refused_with_status_and_code(body, status, code):
    with pytest.raises(RequestError) as err:
        parse_generate(body, LIMITS)
    assert (err.value.status, err.value.code) == (status, code), err.value.message


def test_a_body_gets_its_defaults():
    assert parse_generate(b'{"prompt": "hi"}', LIMITS) == GenerateRequest("hi", 16, 0.0, None)
    roomy = GenerateLimits(64, None, 1000)
    assert parse_generate(b'{"prompt": "hi", "temperature": 1, "seed": 3}', roomy) == (
        GenerateRequest("hi", 32, 1.0, 3))


@pytest.mark.parametrize("prompt_tokens,max_new,limit_of", [(48, 16, None), (40, 16, 40),
                                                            (60, 4, None)])
def test_prompt_limit_is_the_context_left_or_the_configured_limit(prompt_tokens, max_new,
                                                                  limit_of):
    check_prompt_length(prompt_tokens, max_new, 64, limit_of)  # exactly at the limit: fine
    with pytest.raises(RequestError, match=f"prompt of {prompt_tokens + 1} tokens") as err:
        check_prompt_length(prompt_tokens + 1, max_new, 64, limit_of)
    assert (err.value.status, err.value.code) == (400, "prompt_too_long")


def test_the_builder_refuses_missing_models_and_a_context_too_small(lm_store):
    from distillery.serving.lm_app import build_lm_app

    _, root = lm_store
    with pytest.raises(FileNotFoundError, match="no model 'ghost'"):
        build_lm_app(root, {"ghost": ("students", "nobody")})
    with pytest.raises(ValueError, match="max_new_tokens 64 leaves no room .* use at most 63"):
        build_lm_app(root, MODELS, max_new_tokens=64)


# ---------------------------------------------------------------- the app over HTTP


@pytest.fixture(scope="module")
def lm_http(local_ray, lm_store):
    """The app on the session's local Ray; an HTTP client of its route prefix."""
    from ray import serve

    from distillery.serving.lm_app import build_lm_app

    _, root = lm_store
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_lm_app(root, MODELS, max_new_tokens=LIMITS.max_new_tokens,
                           max_prompt_tokens=LIMITS.max_prompt_tokens,
                           max_body_bytes=LIMITS.max_body_bytes), name=APP, route_prefix=PREFIX)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}{PREFIX}", timeout=30) as http:
            yield http
    finally:
        serve.delete(APP)
        # Serve's HTTP port is fixed while it runs: the next test starts it on its own port
        serve.shutdown()


def generate(http: httpx.Client, name: str = "student", **body) -> httpx.Response:
    return http.post(f"/v1/models/{name}:generate", json={"prompt": PROMPT, **body})


def test_generate_returns_the_greedy_continuation_and_its_token_counts(lm_http, lm_store):
    models, _ = lm_store
    for name, (model, tokenizer) in models.items():
        answer = generate(lm_http, name, max_new_tokens=5)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        prompt = tokenizer.encode(PROMPT)
        ids = generate_ids(model, prompt, 5, 0.0, None, tokenizer.eos_token_id)
        assert body == {"model": name, "text": tokenizer.decode(ids, skip_special_tokens=True),
                        "prompt_tokens": len(prompt), "generated_tokens": len(ids),
                        "finish_reason": "eos" if ids[-1] == 0 else "length"}
        assert generate(lm_http, name, max_new_tokens=5).json() == body  # greedy: same again
    for n in (1, 16):
        body = generate(lm_http, max_new_tokens=n, temperature=2.0).json()
        assert body["generated_tokens"] == n or body["finish_reason"] == "eos"
        assert body["generated_tokens"] <= n


def test_a_seed_makes_sampling_reproducible_and_no_seed_draws_afresh(lm_http):
    seeded = [generate(lm_http, temperature=1.5, seed=11, max_new_tokens=16).json()["text"]
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    unseeded = {generate(lm_http, temperature=1.5, max_new_tokens=16).json()["text"]
                for _ in range(2)}
    assert len(unseeded) == 2


def test_bad_input_gets_a_4xx_json_error_and_the_next_request_succeeds(lm_http):
    cases = [("POST", "/v1/models/teacher:generate", body, status, code)
             for body, status, code in BAD_BODIES]
    cases += [
        ("POST", "/v1/models/nobody:generate", b'{"prompt": "x"}', 404, "unknown_model"),
        ("POST", "/v1/models/student:generate",
         json.dumps({"prompt": PROMPT * 20}).encode(), 400, "prompt_too_long"),
        ("GET", "/v1/models/student:generate", b"", 405, "method_not_allowed"),
        ("GET", "/v1/models/student/extra", b"", 404, "not_found"),
    ]
    for method, path, body, status, code in cases:
        response = lm_http.request(method, path, content=body,
                                   headers={"content-type": "application/json"})
        assert response.status_code == status, (path, body[:60], response.text)
        assert response.json()["error"]["code"] == code, response.text
        assert generate(lm_http, max_new_tokens=2).status_code == 200  # still serving


def test_models_health_and_openapi(lm_http, lm_store):
    models, _ = lm_store
    listed = lm_http.get("/v1/models").json()["models"]
    assert [m["name"] for m in listed] == ["student", "teacher"]
    for m in listed:
        model = models[m["name"]][0]
        assert (m["params"], m["vocab_size"], m["context"]) == (
            sum(p.numel() for p in model.parameters()), 300, 64)
    assert lm_http.get("/healthz").json() == {"status": "ok", "models": ["student", "teacher"]}
    paths = lm_http.get("/openapi.json").json()["paths"]
    operation = paths["/v1/models/{name}:generate"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "prompt"]
    assert {"200", "400", "404", "413", "503"} <= set(operation["responses"])


def test_generated_requests_get_no_5xx_and_responses_match_the_schema(lm_http):
    """schemathesis, as tests/test_serving_fuzz.py runs it on the classifier app: bodies that
    fit the documented schema and bodies that break it, for a random and a real model name."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        response_schema_conformance,
        status_code_conformance,
    )

    base_url = str(lm_http.base_url).rstrip("/")
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 3
    for operation in operations:
        fixed = [None, {"name": "student"}] if "{name}" in operation.path else [None]
        modes = list(GenerationMode) if len(operation.body) else [GenerationMode.POSITIVE]
        for mode in modes:
            for path_parameters in fixed:
                strategy = operation.as_strategy(mode, path_parameters=path_parameters)

                @settings(max_examples=10, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def check(case):
                    case.call_and_validate(base_url=base_url, timeout=30, checks=[
                        not_a_server_error, status_code_conformance,
                        response_schema_conformance])

                check()
    assert generate(lm_http).status_code == 200
