"""Request validation and response shapes of the HTTP API (V1 and the Open Inference Protocol)."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from distillery.serving.binary import Outputs
from distillery.serving.schema import (
    V1_PREDICTION,
    V2_PREDICTION,
    Limits,
    RequestError,
    parse_v1,
    parse_v1_text,
    parse_v2,
    parse_v2_text,
    v1_error,
    v1_prediction,
    v2_error,
    v2_prediction,
)

LIMITS = Limits(num_features=3, max_instances=4, max_body_bytes=2000)


def v1(obj) -> bytes:
    return json.dumps(obj).encode()


def v2(shape, data, datatype="FP32", **extra) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                                   "data": data}], **extra}).encode()


BAD_V1 = [  # (body, status, code)
    (b"", 400, "empty"),
    (b"{not json", 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    (v1([[1, 2, 3]]), 400, "invalid_request"),
    (v1({"rows": [[1, 2, 3]]}), 400, "missing_key"),
    (v1({"instances": "1,2,3"}), 400, "wrong_type"),
    (v1({"instances": []}), 400, "empty"),
    (v1({"instances": [[1, 2]]}), 400, "wrong_shape"),
    (v1({"instances": [[1, 2, 3], [1, 2]]}), 400, "wrong_shape"),
    (v1({"instances": [1, 2, 3]}), 400, "wrong_shape"),
    (v1({"instances": [[[1, 2, 3]]]}), 400, "wrong_shape"),
    (v1({"instances": [[1, "2", 3]]}), 400, "wrong_type"),
    (v1({"instances": [[1, True, 3]]}), 400, "wrong_type"),
    (v1({"instances": [[1, None, 3]]}), 400, "wrong_type"),
    (b'{"instances": [[1, NaN, 3]]}', 400, "not_finite"),
    (b'{"instances": [[1, Infinity, 3]]}', 400, "not_finite"),
    (v1({"instances": [[1, 1e39, 3]]}), 400, "not_finite"),  # overflows float32
    (b'{"instances": [[1, ' + b"9" * 400 + b', 3]]}', 400, "not_finite"),  # beyond any float
    (v1({"instances": [[1, 2, 3]] * 5}), 413, "too_many_instances"),
    (v1({"instances": [[1, 2, 3]], "pad": "x" * 2000}), 413, "body_too_large"),
    (v1({"instances": [[1, 2, 3]], "user_id": [1]}), 400, "wrong_type"),
]


@pytest.mark.parametrize("body,status,code", BAD_V1)
def test_bad_v1_requests_are_4xx_with_a_code(body, status, code):
    with pytest.raises(RequestError) as err:
        parse_v1(body, LIMITS)
    assert (err.value.status, err.value.code) == (status, code)
    assert v1_error(err.value) == {"error": {"code": code, "message": err.value.message}}


BAD_V2 = [
    (v1({"instances": [[1, 2, 3]]}), 400, "missing_key"),
    (v1({"inputs": []}), 400, "missing_key"),
    (v1({"inputs": [{"name": "x", "shape": [1, 3], "data": [1, 2, 3]}]}), 400, "missing_key"),
    (v2([1, 3], ["a", "b", "c"], "BYTES"), 400, "unsupported_datatype"),
    (v2([1, 3], [True, False, True], "BOOL"), 400, "unsupported_datatype"),
    (v2([1, 3], [1, 2, 3], ["FP32"]), 400, "unsupported_datatype"),  # found by schemathesis
    (v2([3], [1, 2, 3]), 400, "wrong_shape"),
    (v2([1, 4], [1, 2, 3, 4]), 400, "wrong_shape"),
    (v2([0, 3], []), 400, "wrong_shape"),
    (v2([2, 3], [1, 2, 3]), 400, "shape_mismatch"),
    (v2([1, 3], [1.5, 2, 3], "INT32"), 400, "wrong_type"),
    (v2([1, 3], [1, "2", 3]), 400, "wrong_type"),
    (v2([5, 3], [1] * 15), 413, "too_many_instances"),
    (b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", '
     b'"data": [1, NaN, 3]}]}', 400, "not_finite"),
]


@pytest.mark.parametrize("body,status,code", BAD_V2)
def test_bad_v2_requests_are_4xx_with_a_protocol_error(body, status, code):
    with pytest.raises(RequestError) as err:
        parse_v2(body, LIMITS)
    assert (err.value.status, err.value.code) == (status, code)
    assert v2_error(err.value) == {"error": err.value.message}


def test_good_v1_request_gives_a_float32_matrix_and_the_user_key():
    x, user, _ = parse_v1(v1({"instances": [[1, 2, 3], [4.5, -1, 0]], "user_id": 42}), LIMITS)
    assert x.dtype == np.float32 and x.tolist() == [[1, 2, 3], [4.5, -1, 0]]
    assert user == "42"
    assert parse_v1(v1({"instances": [[1, 2, 3]]}), LIMITS)[1] is None


def test_good_v2_request_takes_flat_or_nested_data():
    flat, request_id, outputs = parse_v2(v2([2, 3], [1, 2, 3, 4, 5, 6], id="r1"), LIMITS)
    nested, _, _ = parse_v2(v2([2, 3], [[1, 2, 3], [4, 5, 6]], "INT64"), LIMITS)
    assert flat.tolist() == nested.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert request_id == "r1" and outputs == Outputs(None, frozenset())  # all, as JSON


def test_responses_name_the_model_and_version():
    probs = np.array([[0.1, 0.9], [0.7, 0.3]], dtype=np.float32)
    out = v1_prediction(probs, "student", "run-1", "req-1", None)
    assert out["predictions"] == [1, 0] and out["model"] == "student" and "labels" not in out
    assert out["model_version"] == "run-1" and out["request_id"] == "req-1"
    out = v2_prediction(probs, "student", "run-1", "req-1", None)
    assert out["model_name"] == "student" and out["model_version"] == "run-1"
    probabilities, predictions = out["outputs"]
    assert probabilities["shape"] == [2, 2] and len(probabilities["data"]) == 4
    assert predictions == {"name": "predictions", "shape": [2], "datatype": "INT64",
                           "data": [1, 0]}


def test_responses_name_each_predicted_class_when_the_card_has_names():
    probs = np.array([[0.1, 0.9], [0.7, 0.3]], dtype=np.float32)
    out = v1_prediction(probs, "student", "run-1", "req-1", ["cat", "dog"])
    assert out["labels"] == ["dog", "cat"]
    jsonschema.validate(out, V1_PREDICTION)
    out = v2_prediction(probs, "student", "run-1", "req-1", ["cat", "dog"])
    assert out["outputs"][2] == {"name": "labels", "shape": [2], "datatype": "BYTES",
                                 "data": ["dog", "cat"]}
    jsonschema.validate(out, V2_PREDICTION)


# ---------------------------------------------------------------- a text model's requests

BAD_TEXT = [  # (parse, body, status, code, message)
    (parse_v1_text, v1({"instances": "one text"}), 400, "wrong_type",
     "instances must be a list of texts, got str"),
    (parse_v1_text, v1({"instances": []}), 400, "empty", "instances is empty; send at least one "
                                                         "text"),
    (parse_v1_text, v1({"instances": ["a", 3]}), 400, "wrong_type",
     "instances[1] must be a string, got int"),
    (parse_v1_text, v1({"instances": [[0.5, 1.0, 2.0]]}), 400, "wrong_type",
     "instances[0] must be a string, got list"),
    (parse_v1_text, v1({"instances": ["ok", " \n"]}), 400, "empty_text",
     "instances[1] is blank; send text to classify"),
    (parse_v1_text, v1({"instances": ["t"] * 5}), 413, "too_many_instances",
     "5 texts exceed the limit of 4"),
    (parse_v1_text, v1({"texts": ["t"]}), 400, "missing_key",
     'body needs "instances": a list of texts'),
    (parse_v2_text, v2([1, 3], [1.0, 2.0, 3.0]), 400, "unsupported_datatype",
     "datatype 'FP32': this model reads text; use BYTES"),
    (parse_v2_text, v2([2, 2], ["a", "b", "c", "d"], "BYTES"), 400, "wrong_shape",
     "shape must be [batch] (or [batch, 1]), got [2, 2]"),
    (parse_v2_text, v2([3], ["a", "b"], "BYTES"), 400, "shape_mismatch",
     "shape [3] needs 3 texts, data has 2"),
    (parse_v2_text, v2([1], [None], "BYTES"), 400, "wrong_type",
     "data[0] must be a string, got NoneType"),
]


@pytest.mark.parametrize("parse, body, status, code, message", BAD_TEXT)
def test_bad_text_requests_are_4xx_naming_the_instance(parse, body, status, code, message):
    with pytest.raises(RequestError) as caught:
        parse(body, LIMITS)
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, code,
                                                                              message)


def test_good_text_requests_give_the_texts_unchanged():
    texts, user, _ = parse_v1_text(v1({"instances": ["Return a list.", "é" * 5000],
                                    "user_id": 7}), Limits(3, 4, 40_000))
    assert texts.dtype == object and texts.tolist() == ["Return a list.", "é" * 5000]
    assert user == "7"  # a text longer than the model reads is the replica's to truncate
    for shape in ([2], [2, 1]):
        texts, request_id, _ = parse_v2_text(v2(shape, ["a b", "c"], "BYTES", id="r-1"), LIMITS)
        assert texts.tolist() == ["a b", "c"] and request_id == "r-1"
