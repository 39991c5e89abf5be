"""The Open Inference Protocol (v2) over HTTP, as tensors: requests in, responses out.

KServe and Triton call models with this protocol (``POST /v2/models/{name}/infer``);
this module turns its JSON bodies, and bodies with the binary tensor extension, into
torch tensors, and tensors back into its responses, checking everything a client can
get wrong against the specification (github.com/kserve/open-inference-protocol,
``specification/protocol/inference_rest.md``; the binary extension is Triton's
``docs/protocol/extension_binary_data.md``). It does no I/O: the HTTP servers that
speak the protocol are thin adapters around it.

- A tensor's ``data`` is row-major, nested or flat; its element count must be the
  product of its ``shape``. JSON numbers are coerced to the tensor's datatype when they
  fit it exactly (an integer type refuses 1.5, 300 for UINT8 and ``true``); FP16 and
  BF16 are accepted from JSON numbers as well as binary (Triton refuses them in JSON;
  the specification lets a server coerce).
- ``BYTES`` elements are JSON strings (UTF-8), or in binary a 4-byte little-endian
  length before each element's bytes; they stay ``bytes`` (a list per tensor), never a
  tensor.
- With the binary extension, ``Inference-Header-Content-Length`` is the JSON's length;
  the tensors whose ``parameters`` carry ``binary_data_size`` follow it in the order
  they are listed, little-endian, without padding. An output is sent binary when its
  request says ``"binary_data": true`` or the request's parameters say
  ``"binary_data_output": true``.

Every refusal is an ``InferenceProtocolError`` with the HTTP status the protocol calls
for (400 for a bad request) and a message naming the tensor and what to change; the
response body for it is ``error_body(message)``, the protocol's ``{"error": …}``.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from anypu.errors import InputError

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferInput",
    "InferRequest",
    "InferenceProtocolError",
    "RequestedOutput",
    "datatype_of",
    "encode_infer_response",
    "error_body",
    "from_raw",
    "named_outputs",
    "parse_infer_request",
    "to_raw",
]

#: The request and response header that gives the JSON's length when binary data follows.
HEADER_LENGTH = "Inference-Header-Content-Length"

#: Every datatype of the protocol, and the torch dtype a tensor of it becomes (None:
#: BYTES, kept as a list of ``bytes``).
DATATYPES: dict[str, torch.dtype | None] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
    "BF16": torch.bfloat16,
    "BYTES": None,
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items() if dtype is not None}
INT_RANGES = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}
_MAX_DEPTH = 32  # nesting of a JSON ``data`` array (a tensor has at most this many dims)


class InferenceProtocolError(InputError):
    """A request the protocol refuses: ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InferInput:
    """One input tensor: ``value`` is a tensor, or a list of ``bytes`` for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    value: torch.Tensor | list[bytes]


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str
    inputs: tuple[InferInput, ...]
    #: Empty: every output the model gives, as JSON unless ``binary_outputs``.
    outputs: tuple[RequestedOutput, ...] = ()
    binary_outputs: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def datatype_of(value: torch.Tensor | Sequence[bytes]) -> str:
    """The protocol's name for a tensor's dtype (``BYTES`` for a list of bytes)."""
    if not isinstance(value, torch.Tensor):
        return "BYTES"
    name = _NAMES.get(value.dtype)
    if name is None:
        raise InferenceProtocolError(
            f"a {value.dtype} tensor has no datatype in the protocol: return one of"
            f" {sorted(_NAMES.values())}",
            status=500,
        )
    return name


def named_outputs(value: Any) -> dict[str, torch.Tensor] | None:
    """A model's outputs by the names the protocol gives them: ``output0``… for a tensor
    or a tuple or list of them, a dict's own keys; None when they are not tensors the
    protocol can carry."""
    if isinstance(value, torch.Tensor):
        named: dict[str, Any] = {"output0": value}
    elif isinstance(value, (tuple, list)):
        named = {f"output{i}": v for i, v in enumerate(value)}
    elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
        named = dict(value)
    else:
        return None
    return named if all(isinstance(v, torch.Tensor) for v in named.values()) else None


# ---------------------------------------------------------------------- requests


def parse_infer_request(
    body: bytes, header_length: int | None = None, *, max_elements: int = 1 << 28
) -> InferRequest:
    """An inference request's body (and its ``Inference-Header-Content-Length``, None
    when absent: all JSON); ``max_elements`` bounds each tensor."""
    if header_length is None:
        header_length = len(body)
    if not 0 <= header_length <= len(body):
        raise InferenceProtocolError(
            f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes: it must"
            " give the length of the JSON at the start of the body"
        )
    try:
        document = json.loads(body[:header_length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InferenceProtocolError(
            f"the request is not JSON ({error}); with binary tensors after the JSON, send"
            f" {HEADER_LENGTH} with the JSON's length"
        ) from None
    if not isinstance(document, dict):
        raise InferenceProtocolError("the request must be a JSON object with an 'inputs' list")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InferenceProtocolError("the request needs 'inputs': a non-empty list of tensors")
    parameters = _parameters(document.get("parameters"), "the request")
    binary = memoryview(body)[header_length:]
    offset = 0
    inputs: list[InferInput] = []
    for position, raw in enumerate(raw_inputs):
        parsed, used = _input(raw, position, binary[offset:], max_elements)
        if any(i.name == parsed.name for i in inputs):
            raise InferenceProtocolError(f"input '{parsed.name}' is given twice")
        inputs.append(parsed)
        offset += used
    if offset != len(binary):
        raise InferenceProtocolError(
            f"{len(binary)} bytes follow the JSON but the inputs' binary_data_size add up to"
            f" {offset}: they must match"
        )
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InferenceProtocolError(f"'id' must be a string, got {request_id!r}")
    return InferRequest(
        id=request_id,
        inputs=tuple(inputs),
        outputs=_requested_outputs(document.get("outputs")),
        binary_outputs=_flag(parameters, "binary_data_output", "the request"),
        parameters=parameters,
    )


def _parameters(raw: object, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InferenceProtocolError(f"'parameters' of {where} must be an object")
    return raw


def _flag(parameters: Mapping[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InferenceProtocolError(f"parameter '{key}' of {where} must be true or false")
    return value


def _requested_outputs(raw: object) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InferenceProtocolError("'outputs' must be a list of {'name': …} objects")
    found: list[RequestedOutput] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InferenceProtocolError(f"outputs[{position}] must be an object with a 'name'")
        where = f"output '{item['name']}'"
        binary = _flag(_parameters(item.get("parameters"), where), "binary_data", where)
        found.append(RequestedOutput(item["name"], binary))
    return tuple(found)


def _input(
    raw: object, position: int, binary: memoryview, max_elements: int
) -> tuple[InferInput, int]:
    """One input and how many bytes of the binary section it took."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise InferenceProtocolError(f"inputs[{position}] must be an object with a 'name'")
    name = raw["name"]
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise InferenceProtocolError(
            f"input '{name}': datatype {datatype!r} is not one of {sorted(DATATYPES)}"
        )
    shape = _shape(raw.get("shape"), name)
    count = math.prod(shape)
    if count > max_elements:
        raise InferenceProtocolError(
            f"input '{name}' has {count} elements, more than the {max_elements} allowed",
            status=413,
        )
    size = _parameters(raw.get("parameters"), f"input '{name}'").get("binary_data_size")
    if size is not None:
        if "data" in raw:
            raise InferenceProtocolError(
                f"input '{name}' has both 'data' and binary_data_size: give one"
            )
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(binary):
            raise InferenceProtocolError(
                f"input '{name}': binary_data_size {size!r} must be a whole number of bytes"
                f" no more than the {len(binary)} left after the JSON"
            )
        value = from_raw(name, datatype, shape, count, bytes(binary[:size]))
        return InferInput(name, datatype, shape, value), size
    if "data" not in raw:
        raise InferenceProtocolError(
            f"input '{name}' has no 'data' (nor parameters.binary_data_size for binary data)"
        )
    flat = _flatten(raw["data"], name)
    if len(flat) != count:
        raise InferenceProtocolError(
            f"input '{name}' has shape {list(shape)} ({count} elements) but {len(flat)}"
            " elements of data"
        )
    return InferInput(name, datatype, shape, _from_json(name, datatype, shape, flat)), 0


def _shape(raw: object, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise InferenceProtocolError(
            f"input '{name}': shape must be a list of whole numbers of 0 or more, got {raw!r}"
        )
    if len(raw) > _MAX_DEPTH:
        raise InferenceProtocolError(
            f"input '{name}' has {len(raw)} dimensions; at most {_MAX_DEPTH}"
        )
    return tuple(raw)


def _flatten(data: object, name: str) -> list[object]:
    out: list[object] = []

    def walk(item: object, depth: int) -> None:
        if isinstance(item, list):
            if depth >= _MAX_DEPTH:
                raise InferenceProtocolError(f"input '{name}': data nested deeper than its shape")
            for element in item:
                walk(element, depth + 1)
        else:
            out.append(item)

    walk(data, 0)
    return out


def _from_json(name: str, datatype: str, shape: tuple[int, ...], flat: list[object]) -> Any:
    if datatype == "BYTES":
        if not all(isinstance(e, str) for e in flat):
            raise InferenceProtocolError(f"input '{name}': BYTES data must be JSON strings")
        return [str(e).encode() for e in flat]
    if datatype == "BOOL":
        if not all(isinstance(e, bool) for e in flat):
            raise InferenceProtocolError(f"input '{name}': BOOL data must be true or false")
    elif datatype in INT_RANGES:
        low, high = INT_RANGES[datatype]
        for e in flat:
            if isinstance(e, bool) or not isinstance(e, int) or not low <= e <= high:
                raise InferenceProtocolError(
                    f"input '{name}': {e!r} is not a {datatype} (whole numbers {low} to {high})"
                )
    elif not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in flat):
        raise InferenceProtocolError(f"input '{name}': {datatype} data must be numbers")
    dtype = DATATYPES[datatype]
    if datatype in ("UINT16", "UINT32", "UINT64"):
        # torch builds these from Python ints only through a wider type; UINT64 above
        # 2**63 goes through its two's complement.
        wide = [int(e) - (1 << 64) if int(e) >= 1 << 63 else int(e) for e in flat]  # type: ignore[call-overload]
        return torch.tensor(wide, dtype=torch.int64).to(dtype).reshape(shape)
    return torch.tensor(flat, dtype=dtype).reshape(shape)


def from_raw(name: str, datatype: str, shape: tuple[int, ...], count: int, data: bytes) -> Any:
    """A tensor (a list of ``bytes`` for BYTES) from its raw little-endian bytes, as the
    binary extension and gRPC's raw contents carry it."""
    dtype = DATATYPES[datatype]
    if dtype is None:
        return _unpack_bytes(name, count, data)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) != count * itemsize:
        raise InferenceProtocolError(
            f"input '{name}': shape {list(shape)} of {datatype} is {count * itemsize} bytes but"
            f" binary_data_size is {len(data)}"
        )
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    tensor = torch.frombuffer(bytearray(data), dtype=dtype)
    if sys.byteorder == "big" and itemsize > 1:  # the protocol's bytes are little-endian
        tensor = tensor.view(torch.uint8).reshape(-1, itemsize).flip(1).reshape(-1).view(dtype)
    if datatype == "BOOL" and bool((tensor.view(torch.uint8) > 1).any()):
        raise InferenceProtocolError(f"input '{name}': BOOL bytes must be 0 or 1")
    return tensor.reshape(shape)


def _unpack_bytes(name: str, count: int, data: bytes) -> list[bytes]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InferenceProtocolError(f"input '{name}': a BYTES length prefix is cut short")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InferenceProtocolError(
                f"input '{name}': a BYTES element says {length} bytes but {len(data) - offset}"
                " are left"
            )
        elements.append(data[offset : offset + length])
        offset += length
    if len(elements) != count:
        raise InferenceProtocolError(
            f"input '{name}' has {count} elements by its shape but {len(elements)} BYTES"
            " elements in its binary data"
        )
    return elements


# ---------------------------------------------------------------------- responses


def encode_infer_response(
    model_name: str,
    request: InferRequest,
    outputs: Mapping[str, torch.Tensor | Sequence[bytes]],
    model_version: str = "",
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (``Content-Type``, and ``HEADER_LENGTH`` when
    binary tensors follow the JSON) for a model's named outputs, as the request asked."""
    wanted = request.outputs or tuple(
        RequestedOutput(name, request.binary_outputs) for name in outputs
    )
    missing = [o.name for o in wanted if o.name not in outputs]
    if missing:
        raise InferenceProtocolError(
            f"the model has no output {missing[0]!r}; it gives {sorted(outputs)}"
        )
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in wanted:
        value = outputs[out.name]
        entry, chunk = _output(out.name, value, out.binary or request.binary_outputs)
        described.append(entry)
        if chunk is not None:
            chunks.append(chunk)
    document: dict[str, Any] = {"model_name": model_name, "outputs": described}
    if model_version:
        document["model_version"] = model_version
    if request.id:
        document["id"] = request.id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return header, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + b"".join(chunks), headers


def _output(
    name: str, value: torch.Tensor | Sequence[bytes], binary: bool
) -> tuple[dict[str, Any], bytes | None]:
    datatype = datatype_of(value)
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(tensor.shape)}
        if binary:
            raw = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            return entry, raw
        flat = tensor.reshape(-1)
        if tensor.dtype in (torch.float16, torch.bfloat16):
            flat = flat.to(torch.float32)
        elif tensor.dtype in (torch.uint16, torch.uint32, torch.uint64):
            flat = flat.to(torch.int64)  # UINT64 above 2**63 comes out in two's complement
        entry["data"] = flat.tolist() if datatype != "UINT64" else _uint64(flat)
        return entry, None
    elements = [bytes(e) for e in value]
    entry = {"name": name, "datatype": "BYTES", "shape": [len(elements)]}
    if binary:
        raw = to_raw(elements)
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    try:
        entry["data"] = [e.decode() for e in elements]
    except UnicodeDecodeError:
        raise InferenceProtocolError(
            f"output '{name}' holds bytes that are not UTF-8 text: ask for it with"
            ' "parameters": {"binary_data": true}'
        ) from None
    return entry, None


def to_raw(value: torch.Tensor | Sequence[bytes]) -> bytes:
    """A tensor's (or BYTES elements') raw little-endian bytes, row-major."""
    if not isinstance(value, torch.Tensor):
        return b"".join(struct.pack("<I", len(e)) + bytes(e) for e in value)
    tensor = value.detach().to("cpu").contiguous()
    raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    if sys.byteorder == "big" and tensor.element_size() > 1:
        raw = _swap(raw, tensor.element_size())
    return raw


def _uint64(flat: torch.Tensor) -> list[int]:
    return [v + (1 << 64) if v < 0 else v for v in flat.tolist()]


def _swap(raw: bytes, itemsize: int) -> bytes:
    return b"".join(raw[i : i + itemsize][::-1] for i in range(0, len(raw), itemsize))
