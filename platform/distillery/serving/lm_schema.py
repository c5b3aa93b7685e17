"""HTTP request validation and response shapes of causal-LM generation
(`POST /v1/models/{name}:generate`).

Pure functions, so every rule is unit-tested without a server. A bad request raises
`RequestError(status, code, message)` and is answered in the V1 error shape,
`{"error": {"code", "message"}}`, like every other V1 endpoint (schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from distillery.serving.schema import RequestError, json_object

DEFAULT_MAX_NEW_TOKENS = 32
MAX_TEMPERATURE = 2.0
MIN_TEMPERATURE = 0.01
"""Below this, logits / T overflow to inf and sampling fails: such requests are refused."""
MAX_SEED = 2**63 - 1
FIELDS = ("prompt", "max_new_tokens", "temperature", "seed")


@dataclass(frozen=True)
class GenerateLimits:
    max_new_tokens: int  # what a request may ask for, at most
    max_prompt_tokens: int | None  # None: only the model's context bounds the prompt
    max_body_bytes: int


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    max_new_tokens: int
    temperature: float  # 0: greedy
    seed: int | None  # None: a fresh seed (sampling only)


def parse_generate(body: bytes, limits: GenerateLimits) -> GenerateRequest:
    """`{"prompt": str, "max_new_tokens"?: int, "temperature"?: number, "seed"?: int}` ->
    GenerateRequest. max_new_tokens defaults to min(32, the limit); temperature to 0 (greedy)."""
    payload = json_object(body, limits.max_body_bytes)
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise RequestError(400, "unknown_field", f"unknown fields {unknown}; valid: "
                                                 f"{', '.join(FIELDS)}")
    if "prompt" not in payload:
        raise RequestError(400, "missing_key", 'body needs "prompt": the text to continue')
    prompt = payload["prompt"]
    if not isinstance(prompt, str):
        raise RequestError(400, "wrong_type", f"prompt must be a string, got "
                                              f"{type(prompt).__name__}")
    try:  # JSON may escape a lone surrogate ("\ud800"), which no tokenizer can encode
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(400, "invalid_text", "prompt holds a lone UTF-16 surrogate; send "
                                                "valid Unicode text") from None
    if not prompt.strip():
        raise RequestError(400, "empty_prompt", "prompt is empty or only whitespace; send "
                                                "some text to continue")
    max_new = payload.get("max_new_tokens", min(DEFAULT_MAX_NEW_TOKENS, limits.max_new_tokens))
    if not _is_int(max_new):
        raise RequestError(400, "wrong_type", f"max_new_tokens must be an integer, got "
                                              f"{max_new!r}")
    if not 1 <= max_new <= limits.max_new_tokens:
        raise RequestError(400, "out_of_range", f"max_new_tokens must be in 1.."
                                                f"{limits.max_new_tokens}, got {max_new}")
    temperature = payload.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise RequestError(400, "wrong_type", f"temperature must be a number, got "
                                              f"{temperature!r}")
    # NaN fails every comparison, and an integer beyond float's range compares exactly
    if not (temperature == 0 or MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):
        raise RequestError(400, "out_of_range", f"temperature must be 0 (greedy) or in "
                                                f"{MIN_TEMPERATURE:g}..{MAX_TEMPERATURE:g}, got "
                                                f"{temperature}")
    seed = payload.get("seed")
    if "seed" in payload and not _is_int(seed):
        raise RequestError(400, "wrong_type", f"seed must be an integer, got {seed!r}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise RequestError(400, "out_of_range", f"seed must be in 0..{MAX_SEED}, got {seed}")
    return GenerateRequest(prompt, max_new, float(temperature), seed)


def check_prompt_length(prompt_tokens: int, max_new_tokens: int, context: int,
                        max_prompt_tokens: int | None) -> None:
    """The prompt and its continuation must fit the model's context (n_positions), and the
    prompt the configured limit: prompt_tokens <= min(context - max_new_tokens,
    max_prompt_tokens)."""
    limit = context - max_new_tokens
    if max_prompt_tokens is not None:
        limit = min(limit, max_prompt_tokens)
    if prompt_tokens == 0:  # some tokenizers drop what they cannot encode
        raise RequestError(400, "empty_prompt", "the prompt encodes to no tokens")
    if prompt_tokens > limit:
        raise RequestError(400, "prompt_too_long", f"prompt of {prompt_tokens} tokens exceeds "
                                                   f"the limit of {limit} with max_new_tokens "
                                                   f"{max_new_tokens} (context {context})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------- OpenAPI
# What parse_generate accepts and the endpoints return. The upper bound of max_new_tokens and
# the prompt's limit in tokens depend on the app's arguments and the model: documented as 400.

GENERATE_REQUEST = {
    "type": "object", "required": ["prompt"], "additionalProperties": False,
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "pattern": r"\S",
                   "description": "the text to continue"},
        "max_new_tokens": {"type": "integer", "minimum": 1,
                           "description": f"tokens to generate, at most; default "
                                          f"{DEFAULT_MAX_NEW_TOKENS} or the app's limit"},
        "temperature": {"type": "number", "minimum": 0, "maximum": MAX_TEMPERATURE,
                        "default": 0, "description": "0: greedy; more: sampling"},
        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED,
                 "description": "makes sampling reproducible"}}}
GENERATE_RESPONSE = {
    "type": "object",
    "required": ["model", "text", "prompt_tokens", "generated_tokens", "finish_reason"],
    "properties": {
        "model": {"type": "string"},
        "text": {"type": "string", "description": "the continuation only, EOS left out"},
        "prompt_tokens": {"type": "integer", "minimum": 1},
        "generated_tokens": {"type": "integer", "minimum": 1,
                             "description": "tokens generated, the EOS that ended them too"},
        "finish_reason": {"enum": ["length", "eos"]}}}
MODELS_RESPONSE = {
    "type": "object", "required": ["models"],
    "properties": {"models": {"type": "array", "items": {
        "type": "object", "required": ["name", "params", "vocab_size", "context"],
        "properties": {"name": {"type": "string"}, "params": {"type": "integer"},
                       "vocab_size": {"type": "integer"}, "context": {"type": "integer"},
                       "created": {"type": "string"}}}}}}
