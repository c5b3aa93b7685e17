"""The Open Inference Protocol's binary tensor extension (`binary_tensor_data`), what Triton's
HTTP client sends by default: pure functions on bytes, unit-tested without a server.

A request's body is a JSON header of `Inference-Header-Content-Length` bytes, then each input's
raw data in input order, sized by its `parameters.binary_data_size`: numbers little-endian,
BYTES elements each a 4-byte little-endian length and the bytes. A response carries the
outputs the request asked for in binary (`parameters.binary_data_output`, or an output's
`parameters.binary_data`) the same way. Anything malformed is a `RequestError` (400) naming
what is wrong.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from distillery.serving.errors import RequestError

EXTENSION = "binary_tensor_data"
HEADER = "Inference-Header-Content-Length"
NUMERIC = {"BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
           "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2",
           "FP32": "<f4", "FP64": "<f8"}
LENGTH = struct.Struct("<I")  # a BYTES element's length prefix


def split(body: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    """(the JSON header, the binary data after it); without the header, (body, None)."""
    if header_length is None:
        return body, None
    if not header_length.isdigit() or int(header_length) > len(body):
        raise RequestError(400, "invalid_binary", f"{HEADER} {header_length!r} must be the JSON "
                                                  f"header's length in bytes, at most the "
                                                  f"body's {len(body)}")
    size = int(header_length)
    return body[:size], body[size:]


def tensor_data(tensor: dict, binary: bytes | None) -> bytes | None:
    """The raw data of the request's one input, or None when it has JSON `data`. Its
    `binary_data_size` must be all of the bytes after the header."""
    size = parameters(tensor, "the input").get("binary_data_size")
    if size is None:
        if binary:
            raise RequestError(400, "invalid_binary", f"{len(binary)} bytes follow the JSON "
                                                      "header but no input has "
                                                      "parameters.binary_data_size")
        return None
    if "data" in tensor:
        raise RequestError(400, "invalid_binary", "an input has both data and "
                                                  "parameters.binary_data_size; send one")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise RequestError(400, "invalid_binary", f"binary_data_size must be a byte count, got "
                                                  f"{size!r}")
    if binary is None or len(binary) != size:
        got = 0 if binary is None else len(binary)
        raise RequestError(400, "invalid_binary", f"binary_data_size {size} but {got} bytes "
                                                  f"follow the JSON header ({HEADER})")
    return binary


def parameters(part: dict, where: str) -> dict:
    """A request part's `parameters` object ({} when absent)."""
    found = part.get("parameters", {})
    if not isinstance(found, dict):
        raise RequestError(400, "wrong_type", f"parameters of {where} must be an object, got "
                                              f"{type(found).__name__}")
    return found


def numbers(raw: bytes, datatype: str, count: int) -> np.ndarray:
    """`count` little-endian values of `datatype` as a flat float64 array."""
    dtype = np.dtype(NUMERIC[datatype])
    if len(raw) != count * dtype.itemsize:
        raise RequestError(400, "invalid_binary", f"{count} {datatype} values need "
                                                  f"{count * dtype.itemsize} bytes, "
                                                  f"binary_data_size is {len(raw)}")
    return np.frombuffer(raw, dtype).astype(np.float64)


def strings(raw: bytes) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length, then that many UTF-8 bytes."""
    values, offset = [], 0
    while offset < len(raw):
        if offset + LENGTH.size > len(raw):
            raise RequestError(400, "invalid_binary", f"BYTES element {len(values)} is cut "
                                                      "short in its 4-byte length")
        (size,) = LENGTH.unpack_from(raw, offset)
        offset += LENGTH.size
        if offset + size > len(raw):
            raise RequestError(400, "invalid_binary", f"BYTES element {len(values)} says "
                                                      f"{size} bytes, {len(raw) - offset} left")
        try:
            values.append(raw[offset:offset + size].decode())
        except UnicodeDecodeError:
            raise RequestError(400, "invalid_binary", f"BYTES element {len(values)} is not "
                                                      "UTF-8 text") from None
        offset += size
    return values


@dataclass(frozen=True)
class Outputs:
    """The outputs a V2 request asked for (`names`, None: all) and those to send in binary."""

    names: tuple[str, ...] | None = None
    binary: frozenset[str] = frozenset()

    @classmethod
    def of(cls, payload: dict, known: tuple[str, ...]) -> Outputs:
        """From the request's `outputs` and `parameters.binary_data_output`."""
        default = parameters(payload, "the request").get("binary_data_output") is True
        requested = payload.get("outputs")
        if requested is None:
            return cls(None, frozenset(known) if default else frozenset())
        if not isinstance(requested, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
            raise RequestError(400, "invalid_request", '"outputs" must be a list of '
                                                       '{"name": str, "parameters"?: {...}}')
        unknown = [o["name"] for o in requested if o["name"] not in known]
        if unknown:
            raise RequestError(400, "unknown_output", f"no output {unknown[0]!r}; valid: "
                                                      f"{', '.join(known)}")
        binary = {o["name"] for o in requested
                  if parameters(o, f"output {o['name']!r}").get("binary_data", default) is True}
        return cls(tuple(o["name"] for o in requested), frozenset(binary))

    def render(self, answer: dict) -> tuple[bytes, dict[str, str]]:
        """A V2 response of the requested outputs: (body, headers). JSON when none is binary;
        else the JSON header, then each binary output's bytes in order."""
        outputs = [o for o in answer["outputs"] if self.names is None or o["name"] in self.names]
        if self.names is not None:
            outputs.sort(key=lambda o: self.names.index(o["name"]))
        tail = []
        for i, output in enumerate(outputs):
            if output["name"] in self.binary:
                raw = encode(output["data"], output["datatype"])
                tail.append(raw)
                outputs[i] = {k: v for k, v in output.items() if k != "data"} | {
                    "parameters": {"binary_data_size": len(raw)}}
        header = json.dumps({**answer, "outputs": outputs}).encode()
        if not tail:
            return header, {"content-type": "application/json"}
        return header + b"".join(tail), {"content-type": "application/octet-stream",
                                         HEADER: str(len(header))}


def encode(data: list, datatype: str) -> bytes:
    """A flat list of values as the extension's raw bytes."""
    if datatype == "BYTES":
        return b"".join(LENGTH.pack(len(b)) + b for b in (str(v).encode() for v in data))
    return np.asarray(data, NUMERIC[datatype]).tobytes()
