"""The Open Inference Protocol's binary tensor extension: requests as Triton's HTTP client builds
them, every malformed body a 400 naming what is wrong, and responses that Triton's own result
parser reads."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tritonclient.http import InferResult

from distillery.serving.binary import HEADER, Outputs, encode
from distillery.serving.schema import (
    OUTPUTS,
    Limits,
    RequestError,
    parse_v2,
    parse_v2_text,
    v2_prediction,
)

LIMITS = Limits(num_features=3, max_instances=4, max_body_bytes=2000)
ROWS = np.array([[1.5, -2.0, 3.25], [0.0, 4.0, -0.5]])


def binary_request(raw: bytes, shape, datatype="FP32", size: int | None = None,
                   extra: dict | None = None, tensor: dict | None = None) -> tuple[bytes, str]:
    """(body, header length) as tritonclient sends a tensor set with binary_data=True."""
    parameters = {"binary_data_size": len(raw) if size is None else size}
    header = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                                     "parameters": parameters, **(tensor or {})}],
                         **(extra or {})}).encode()
    return header + raw, str(len(header))


def texts_raw(texts: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


@pytest.mark.parametrize("datatype,dtype", [("FP32", "<f4"), ("FP64", "<f8"), ("FP16", "<f2"),
                                            ("INT64", "<i8"), ("UINT8", "<u1")])
def test_binary_rows_parse_as_their_json_form(datatype, dtype):
    rows = np.abs(ROWS).astype(dtype) if datatype.startswith("U") else ROWS.astype(dtype)
    body, header = binary_request(rows.tobytes(), [2, 3], datatype, extra={"id": "r-2"})
    x, request_id, outputs = parse_v2(body, LIMITS, header)
    as_json = json.dumps({"inputs": [{"name": "input", "shape": [2, 3], "datatype": datatype,
                                      "data": rows.ravel().tolist()}]}).encode()
    assert x.dtype == np.float32 and x.tolist() == parse_v2(as_json, LIMITS).x.tolist()
    assert request_id == "r-2" and outputs == Outputs(None, frozenset())


def test_binary_texts_parse_as_their_json_form():
    texts = ["a b", "é, and more"]
    body, header = binary_request(texts_raw(texts), [2], "BYTES")
    assert parse_v2_text(body, LIMITS, header).x.tolist() == texts


JSON_ROW = json.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32",
                                   "data": [1, 2, 3]}]}).encode()
MALFORMED = [  # (body, header length, message)
    (b'{"inputs": []}', "x1", "Inference-Header-Content-Length 'x1' must be the JSON header's "
                              "length in bytes, at most the body's 14"),
    (b'{"inputs": []}', "99", "at most the body's 14"),
    (*binary_request(ROWS.astype("<f4").tobytes()[:-1], [2, 3], size=24),
     "binary_data_size 24 but 23 bytes follow the JSON header"),
    (*binary_request(ROWS.astype("<f4").tobytes() + b"\0", [2, 3], size=24),
     "binary_data_size 24 but 25 bytes follow the JSON header"),
    (*binary_request(ROWS.astype("<f8").tobytes(), [2, 3], "FP32"),
     "6 FP32 values need 24 bytes, binary_data_size is 48"),
    (*binary_request(b"\0" * 24, [2, 3], size=-1), "binary_data_size must be a byte count"),
    (*binary_request(b"\0" * 24, [2, 3], tensor={"data": [0] * 6}),
     "an input has both data and parameters.binary_data_size"),
    (JSON_ROW + b"\0\0\0\0", str(len(JSON_ROW)), "4 bytes follow the JSON header but no input "
                                                "has parameters.binary_data_size"),
    (*binary_request(b"\0" * 24, [2, 3], tensor={"parameters": [24]}),
     "parameters of the input must be an object, got list"),
    (*binary_request(b"\0" * 24, [2, 3], extra={"outputs": [{"name": "logits"}]}),
     "no output 'logits'; valid: probabilities, predictions, labels"),
    (*binary_request(ROWS.astype("<f4").tobytes(), [2, 3], extra={"parameters": True}),
     "parameters of the request must be an object, got bool"),
]
MALFORMED_TEXT = [
    (*binary_request(b"\2\0\0", [1], "BYTES"), "BYTES element 0 is cut short in its 4-byte "
                                               "length"),
    (*binary_request(texts_raw(["abc"])[:-1], [1], "BYTES"), "BYTES element 0 says 3 bytes, 2 "
                                                            "left"),
    (*binary_request(b"\2\0\0\0\xff\xfe", [1], "BYTES"), "BYTES element 0 is not UTF-8 text"),
    (*binary_request(texts_raw(["a", "b"]), [3], "BYTES"), "shape [3] needs 3 texts, data has "
                                                           "2"),
]


@pytest.mark.parametrize("parse,body,header,message",
                         [(parse_v2, *case) for case in MALFORMED]
                         + [(parse_v2_text, *case) for case in MALFORMED_TEXT])
def test_malformed_binary_bodies_are_400_naming_the_fault(parse, body, header, message):
    with pytest.raises(RequestError) as err:
        parse(body, LIMITS, header)
    assert err.value.status == 400 and message in err.value.message


def test_binary_nan_is_refused_like_json_nan():
    body, header = binary_request(np.array([[np.nan, 0, 0]], "<f4").tobytes(), [1, 3])
    with pytest.raises(RequestError) as err:
        parse_v2(body, LIMITS, header)
    assert err.value.code == "not_finite"


def answer() -> dict:
    probs = np.array([[0.25, 0.75], [0.875, 0.125]], np.float32)
    return v2_prediction(probs, "student", "v1", "r-1", ["no", "yes"])


def test_binary_outputs_are_read_back_by_tritons_own_parser():
    """binary_data_output (what tritonclient asks when no output is named): every output in
    binary, decoded by tritonclient's InferResult exactly as from a Triton server."""
    body, headers = Outputs.of({"parameters": {"binary_data_output": True}}, OUTPUTS).render(
        answer())
    assert headers["content-type"] == "application/octet-stream"
    result = InferResult.from_response_body(body, header_length=int(headers[HEADER]))
    assert result.as_numpy("probabilities").tolist() == [[0.25, 0.75], [0.875, 0.125]]
    assert result.as_numpy("predictions").tolist() == [1, 0]
    assert result.as_numpy("labels").tolist() == [b"yes", b"no"]
    assert result.get_response()["id"] == "r-1"


def test_named_outputs_come_in_the_order_asked_each_binary_or_json_as_asked():
    outputs = Outputs.of({"outputs": [{"name": "predictions"},
                                      {"name": "probabilities",
                                       "parameters": {"binary_data": True}}]}, OUTPUTS)
    body, headers = outputs.render(answer())
    size = int(headers[HEADER])
    header = json.loads(body[:size])
    assert [o["name"] for o in header["outputs"]] == ["predictions", "probabilities"]
    assert header["outputs"][0]["data"] == [1, 0]  # JSON: no binary_data asked
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(body[size:], "<f4").tolist() == [0.25, 0.75, 0.875, 0.125]
    json_only, headers = Outputs.of({}, OUTPUTS).render(answer())
    assert json.loads(json_only) == answer() and headers == {"content-type": "application/json"}


def test_encode_writes_little_endian_values_and_length_prefixed_bytes():
    assert encode([1, 256], "INT64") == (1).to_bytes(8, "little") + (256).to_bytes(8, "little")
    assert encode(["é"], "BYTES") == b"\x02\x00\x00\x00\xc3\xa9"
