"""HTTP request validation and response shapes: V1 (TF-Serving/KServe V1) and V2 (the Open
Inference Protocol of KServe, Triton and MLServer).

Pure functions on bytes and arrays, so every rule is unit-tested without a server. A bad request
raises `RequestError(status, code, message)`; the router renders it as
`{"error": {"code", "message"}}` on V1 and `{"error": message}` on V2, as each protocol says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from distillery.serving import binary
from distillery.serving.errors import RequestError

V2_FLOAT_TYPES = {"FP16", "FP32", "FP64"}
V2_INT_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}


class Parsed(NamedTuple):
    """A valid request: its rows (or texts), the id it carries (V1: the `user_id` sticky key;
    V2: the request id), and on V2 the outputs it asks for."""

    x: np.ndarray
    ident: str | None
    outputs: binary.Outputs | None = None


@dataclass(frozen=True)
class Limits:
    num_features: int
    max_instances: int
    max_body_bytes: int


def parse_v1(body: bytes, limits: Limits, header_length: str | None = None) -> Parsed:
    """`{"instances": [[f, ...], ...], "user_id"?: str|int}` -> ((B, D) float32, user key).
    V1 has no binary form: `header_length` is ignored."""
    payload = _v1_payload(body, limits, "rows")
    return Parsed(_matrix(payload["instances"], limits, "instances"), _user_key(payload))


def parse_v1_text(body: bytes, limits: Limits, header_length: str | None = None) -> Parsed:
    """`{"instances": ["text", ...], "user_id"?: str|int}` -> ((B,) texts, user key)."""
    payload = _v1_payload(body, limits, "texts")
    return Parsed(_texts(payload["instances"], limits, "instances"), _user_key(payload))


def _v1_payload(body: bytes, limits: Limits, items: str) -> dict:
    payload = json_object(body, limits.max_body_bytes)
    if "instances" not in payload:
        raise RequestError(400, "missing_key", f'body needs "instances": a list of {items}')
    return payload


def _user_key(payload: dict) -> str | None:
    user = payload.get("user_id")
    if user is not None and (isinstance(user, bool) or not isinstance(user, str | int)):
        raise RequestError(400, "wrong_type", f"user_id must be a string or integer, got "
                                              f"{type(user).__name__}")
    return None if user is None else str(user)


OUTPUTS = ("probabilities", "predictions", "labels")  # what v2_prediction can render


def parse_v2(body: bytes, limits: Limits, header_length: str | None = None) -> Parsed:
    """`{"inputs": [{"name", "shape": [B, D], "datatype", "data"}], "id"?, "outputs"?}` ->
    ((B, D) float32, the request id, the outputs asked for). With `header_length` (the
    binary extension's header), the tensor's data may follow the JSON as raw bytes."""
    payload, tensor, raw = _v2_request(body, limits, header_length)
    datatype, shape = tensor["datatype"], tensor["shape"]
    if not isinstance(datatype, str) or datatype not in V2_FLOAT_TYPES | V2_INT_TYPES:
        raise RequestError(400, "unsupported_datatype",
                           f"datatype {datatype!r} is not numeric; use FP32 (or another FP*/INT* "
                           "type)")
    if not _integers(shape, 2):
        raise RequestError(400, "wrong_shape", f"shape must be [batch, {limits.num_features}], "
                                               f"got {shape!r}")
    if shape[0] > limits.max_instances:
        raise RequestError(413, "too_many_instances", f"batch {shape[0]} exceeds the limit of "
                                                      f"{limits.max_instances} rows")
    if shape[0] < 1 or shape[1] != limits.num_features:
        raise RequestError(400, "wrong_shape", f"shape must be [batch >= 1, "
                                               f"{limits.num_features}], got {shape}")
    flat = (binary.numbers(raw, datatype, shape[0] * shape[1]) if raw is not None else
            _numbers(tensor["data"], "data", integers=datatype in V2_INT_TYPES).ravel())
    if flat.size != shape[0] * shape[1]:
        raise RequestError(400, "shape_mismatch", f"shape {shape} needs {shape[0] * shape[1]} "
                                                  f"values, data has {flat.size}")
    return Parsed(_finite(flat.reshape(shape), "data"), _request_id(payload), _outputs(payload))


def parse_v2_text(body: bytes, limits: Limits, header_length: str | None = None) -> Parsed:
    """`{"inputs": [{"name", "shape": [B] or [B, 1], "datatype": "BYTES", "data": ["text",
    ...]}], "id"?, "outputs"?}` -> ((B,) texts, the request id, the outputs asked for)."""
    payload, tensor, raw = _v2_request(body, limits, header_length)
    datatype, shape = tensor["datatype"], tensor["shape"]
    if datatype != "BYTES":
        raise RequestError(400, "unsupported_datatype", f"datatype {datatype!r}: this model "
                                                        "reads text; use BYTES")
    if not (_integers(shape, 1) or _integers(shape, 2) and shape[1] == 1):
        raise RequestError(400, "wrong_shape", f"shape must be [batch] (or [batch, 1]), got "
                                               f"{shape!r}")
    texts = _texts(binary.strings(raw) if raw is not None else tensor["data"], limits, "data")
    if len(texts) != shape[0]:
        raise RequestError(400, "shape_mismatch", f"shape {shape} needs {shape[0]} texts, data "
                                                  f"has {len(texts)}")
    return Parsed(texts, _request_id(payload), _outputs(payload))


def _v2_request(body: bytes, limits: Limits, header_length: str | None
                ) -> tuple[dict, dict, bytes | None]:
    """(the JSON payload, its one input tensor, the tensor's raw bytes or None for JSON data)."""
    check_body_size(len(body), limits.max_body_bytes)
    header, tail = binary.split(body, header_length)
    payload = json_object(header, limits.max_body_bytes)
    tensor = _v2_tensor(payload)
    return payload, tensor, binary.tensor_data(tensor, tail)


def _outputs(payload: dict) -> binary.Outputs:
    return binary.Outputs.of(payload, OUTPUTS)


def _v2_tensor(payload: dict) -> dict:
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(400, "missing_key", '"inputs" must be a list of exactly one tensor '
                                               '{"name", "shape", "datatype", "data"}')
    tensor = inputs[0]
    has_data = "data" in tensor or "binary_data_size" in binary.parameters(tensor, "the input")
    missing = [k for k in ("name", "shape", "datatype") if k not in tensor] + (
        [] if has_data else ["data"])
    if missing:
        raise RequestError(400, "missing_key", f"input tensor lacks {missing}")
    return tensor


def _integers(shape: object, dims: int) -> bool:
    return (isinstance(shape, list) and len(shape) == dims
            and all(isinstance(d, int) and not isinstance(d, bool) for d in shape))


def _request_id(payload: dict) -> str | None:
    request_id = payload.get("id")
    return None if request_id is None else str(request_id)


def check_body_size(size: int | str | None, max_body_bytes: int) -> None:
    """413 for a body of more than `max_body_bytes`: its length, or before it is read, its
    Content-Length header (a missing or malformed header passes; `json_object` checks the bytes
    read)."""
    if str(size).isdigit() and int(size) > max_body_bytes:
        raise RequestError(413, "body_too_large", f"body of {size} bytes exceeds the limit of "
                                                  f"{max_body_bytes}")


def json_object(body: bytes, max_body_bytes: int) -> dict:
    """The body as a JSON object; 413 when too large, 400 when empty, not JSON or not an
    object."""
    check_body_size(len(body), max_body_bytes)
    if not body:
        raise RequestError(400, "empty", "the request body is empty")
    try:
        payload = json.loads(body)
    except RecursionError:  # arrays nested deeper than the parser's stack
        raise RequestError(400, "invalid_json", "body is nested too deeply") from None
    except ValueError as err:  # not UTF-8, not JSON, or an integer of more than 4300 digits
        raise RequestError(400, "invalid_json", f"body is not JSON: {err}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "invalid_request", f"body must be a JSON object, got "
                                                   f"{type(payload).__name__}")
    return payload


def _instances(values: object, limits: Limits, field: str, noun: str) -> list:
    """`values` as a list of 1 to `limits.max_instances` instances (`noun`: rows or texts)."""
    if not isinstance(values, list):
        raise RequestError(400, "wrong_type", f"{field} must be a list of {noun}s, got "
                                              f"{type(values).__name__}")
    if not values:
        raise RequestError(400, "empty", f"{field} is empty; send at least one {noun}")
    if len(values) > limits.max_instances:
        raise RequestError(413, "too_many_instances", f"{len(values)} {noun}s exceed the limit "
                                                      f"of {limits.max_instances}")
    return values


def _matrix(rows: object, limits: Limits, field: str) -> np.ndarray:
    x = _numbers(_instances(rows, limits, field, "row"), field, integers=False)
    if x.ndim != 2 or x.shape[1] != limits.num_features:
        raise RequestError(400, "wrong_shape", f"each row of {field} must hold "
                                               f"{limits.num_features} numbers")
    return _finite(x, field)


def _texts(values: object, limits: Limits, field: str) -> np.ndarray:
    """A list of non-blank strings as a (B,) object array; a text longer than the model reads
    is not an error (the replica truncates it to max_length tokens, as training did)."""
    for i, text in enumerate(_instances(values, limits, field, "text")):
        if not isinstance(text, str):
            raise RequestError(400, "wrong_type", f"{field}[{i}] must be a string, got "
                                                  f"{type(text).__name__}")
        if not text.strip():
            raise RequestError(400, "empty_text", f"{field}[{i}] is blank; send text to "
                                                  "classify")
    return np.array(values, dtype=object)


def _numbers(values: object, field: str, *, integers: bool) -> np.ndarray:
    """A rectangular nested list of JSON numbers as float64; bools and strings are refused,
    not coerced (numpy would read "1.5" and true as numbers)."""
    try:
        arr = np.array(values, dtype=object)
    except ValueError:  # ragged rows
        raise RequestError(400, "wrong_shape", f"{field} rows differ in length") from None
    if arr.ndim == 0:
        raise RequestError(400, "wrong_type", f"{field} must be a list, got "
                                              f"{type(values).__name__}")
    allowed = (int,) if integers else (int, float)
    bad = [v for v in arr.ravel() if type(v) not in allowed][:1]
    if bad and isinstance(bad[0], list):  # numpy keeps ragged rows as list objects
        raise RequestError(400, "wrong_shape", f"{field} rows differ in length")
    if bad:
        kind = "integers" if integers else "numbers"
        raise RequestError(400, "wrong_type", f"{field} must hold only {kind}, got "
                                              f"{bad[0]!r} ({type(bad[0]).__name__})")
    try:
        return arr.astype(np.float64)
    except OverflowError:  # an integer literal too long for any float
        raise RequestError(400, "not_finite", f"{field} holds a number too large for "
                                              "float32") from None


def _finite(x: np.ndarray, field: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():  # NaN/Infinity literals, or beyond float32's range
        raise RequestError(400, "not_finite", f"{field} holds NaN or infinite values (or "
                                              "values beyond float32's range)")
    return x32


# ---------------------------------------------------------------- OpenAPI
# JSON Schemas of the bodies above, for the app's OpenAPI document (what clients and
# tests/test_serving_fuzz.py read). The parse functions are the validation; these describe what
# they accept and what the render functions return. Row width and the row limit depend on the
# served models and the spec, so they are documented as 400 and 413 responses, not here.

NUMBERS = {"type": "array", "items": {"type": "number"}}
TEXT = {"type": "string", "minLength": 1}
V1_REQUEST = {
    "type": "object", "required": ["instances"],
    "properties": {"instances": {"type": "array", "minItems": 1,
                                 "items": {"anyOf": [NUMBERS, TEXT]},
                                 "description": "rows of num_features numbers, or the texts "
                                                "of a text model"},
                   "user_id": {"type": ["string", "integer"],
                               "description": "sticky key of the routed endpoint"}}}
V2_REQUEST = {
    "type": "object", "required": ["inputs"],
    "properties": {"id": {"type": "string"},
                   "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                       "type": "object", "required": ["name", "shape", "datatype", "data"],
                       "properties": {
                           "name": {"type": "string"},
                           "shape": {"type": "array", "minItems": 1, "maxItems": 2,
                                     "items": {"type": "integer", "minimum": 1}},
                           "datatype": {"enum": sorted(V2_FLOAT_TYPES | V2_INT_TYPES
                                                       | {"BYTES"})},
                           "data": {"type": "array", "items": {"anyOf": [{"type": "number"},
                                                                         TEXT]},
                                    "description": "batch * num_features values, row-major; "
                                                   "or a text model's batch of texts (BYTES, "
                                                   "shape [batch])"}}}}}}
FEEDBACK_REQUEST = {
    "type": "object", "required": ["request_id", "success"],
    "properties": {"request_id": {"type": "string"}, "success": {"type": "boolean"}}}
V1_PREDICTION = {
    "type": "object", "required": ["predictions", "probabilities", "model", "model_version",
                                   "request_id"],
    "properties": {"predictions": {"type": "array", "items": {"type": "integer"}},
                   "labels": {"type": "array", "items": {"type": "string"},
                              "description": "each prediction's class name, when the model's "
                                             "card has them"},
                   "probabilities": {"type": "array", "items": NUMBERS},
                   "model": {"enum": ["teacher", "student"]},
                   "model_version": {"type": "string"}, "request_id": {"type": "string"}}}
V2_PREDICTION = {
    "type": "object", "required": ["model_name", "model_version", "id", "outputs"],
    "properties": {"model_name": {"enum": ["teacher", "student"]},
                   "model_version": {"type": "string"}, "id": {"type": "string"},
                   "outputs": {"type": "array", "items": {
                       "type": "object", "required": ["name", "shape", "datatype", "data"],
                       "properties": {"name": {"type": "string"},
                                      "shape": {"type": "array", "items": {"type": "integer"}},
                                      "datatype": {"type": "string"},
                                      "data": {"anyOf": [NUMBERS, {"type": "array", "items": {
                                          "type": "string"}}]}}}}}}
V1_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string"},
                                            "message": {"type": "string"}}}}}
V2_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def openapi_body(schema: dict) -> dict:
    """`openapi_extra` of an endpoint that reads its JSON body itself."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def openapi_responses(ok: dict, error: dict, statuses: dict[int, str]) -> dict:
    """`responses` of an endpoint: 200 with `ok`, each of `statuses` with `error`."""
    return {200: {"description": "OK", "content": {"application/json": {"schema": ok}}},
            **{status: {"description": description,
                        "content": {"application/json": {"schema": error}}}
               for status, description in statuses.items()}}


# ---------------------------------------------------------------- responses

def v1_prediction(probs: np.ndarray, model: str, version: str, request_id: str,
                  class_names: list[str] | None) -> dict:
    """`labels` (each prediction's class name) when the model's card has `class_names`."""
    predictions = probs.argmax(1).tolist()
    labels = {"labels": [class_names[i] for i in predictions]} if class_names else {}
    return {"predictions": predictions, **labels, "probabilities": probs.tolist(),
            "model": model, "model_version": version, "request_id": request_id}


def v2_prediction(probs: np.ndarray, model: str, version: str, request_id: str,
                  class_names: list[str] | None) -> dict:
    """A BYTES output `labels` (each prediction's class name) when the card has them."""
    batch, classes = probs.shape
    predictions = probs.argmax(1).tolist()
    labels = [{"name": "labels", "shape": [batch], "datatype": "BYTES",
               "data": [class_names[i] for i in predictions]}] if class_names else []
    return {"model_name": model, "model_version": version, "id": request_id, "outputs": [
        {"name": "probabilities", "shape": [batch, classes], "datatype": "FP32",
         "data": probs.ravel().tolist()},
        {"name": "predictions", "shape": [batch], "datatype": "INT64", "data": predictions},
        *labels]}


def framework_error(status: int, detail: str) -> RequestError:
    """One of FastAPI's own errors (no route for the path, a method the route lacks), to render
    in a protocol's error shape rather than FastAPI's `{"detail": ...}`."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return RequestError(status, code, detail)


def v1_error(err: RequestError) -> dict:
    return {"error": {"code": err.code, "message": err.message}}


def v2_error(err: RequestError) -> dict:
    return {"error": err.message}


def v1_metadata(name: str, card: dict, version: str) -> dict:
    keys = ("role", "architecture", "params", "num_features", "num_classes", "class_names",
            "tokenizer", "created", "metrics", "fingerprint", "run_id")
    return {"name": name, "model_version": version, **{k: card[k] for k in keys if k in card}}


def v2_metadata(name: str, card: dict, version: str) -> dict:
    inputs = ({"name": "text", "datatype": "BYTES", "shape": [-1]} if "tokenizer" in card
              else {"name": "input", "datatype": "FP32", "shape": [-1, card["num_features"]]})
    return {"name": name, "versions": [version], "platform": "pytorch", "inputs": [inputs],
            "outputs": [{"name": "probabilities", "datatype": "FP32",
                         "shape": [-1, card["num_classes"]]},
                        {"name": "predictions", "datatype": "INT64", "shape": [-1]}]}

