"""The Open Inference Protocol (v2) over gRPC, as tensors: ``ModelInferRequest`` in,
``ModelInferResponse`` out.

The same requests as ``anypu._oip`` reads from HTTP bodies, from the protocol's gRPC
messages (``protos/inference_v2.proto``, written from the specification's
``inference_grpc.md``):

- An input's elements come either in its ``contents``, in the typed field of its
  datatype (``fp32_contents`` for FP32, ``int_contents`` for INT8/16/32, ...), or, for
  every input at once, in the request's ``raw_input_contents`` (one entry per input, in
  order, little-endian, row-major; BYTES as a 4-byte length before each element). FP16
  and BF16 have no typed field: raw only. Mixing the two forms is refused, as KServe
  refuses it.
- Outputs go back in the same form the inputs came in (raw for raw, as Triton's and
  KServe's clients expect), and raw whenever one of them is FP16 or BF16, which has no
  typed field.

It does no I/O. Refusals are ``InferenceProtocolError`` with an HTTP status, which the
server maps to a gRPC code (``grpc_code``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import torch

from anypu._oip import (
    DATATYPES,
    INT_RANGES,
    InferenceProtocolError,
    InferInput,
    InferRequest,
    RequestedOutput,
    datatype_of,
    from_raw,
    to_raw,
)
from anypu.protos import inference_v2_pb2 as pb

__all__ = [
    "SERVICE",
    "encode_model_infer",
    "grpc_code",
    "parameters_of",
    "parse_model_infer",
    "pb",
]

#: The protocol's service name: its methods are ``/inference.GRPCInferenceService/…``.
SERVICE = "inference.GRPCInferenceService"

#: The typed contents field of each datatype (FP16 and BF16 have none).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = sorted(set(CONTENTS_FIELD.values()))
_MAX_DIMS = 32

#: HTTP status (as the gateway answers) -> the gRPC code KServe and Triton use for it.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code(status: int) -> grpc.StatusCode:
    return _CODES.get(status, grpc.StatusCode.INTERNAL)


def parameters_of(raw: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, parameter in raw.items():
        choice = parameter.WhichOneof("parameter_choice")
        found[key] = getattr(parameter, choice) if choice else None
    return found


# ---------------------------------------------------------------------- requests


def parse_model_infer(
    request: pb.ModelInferRequest, *, max_elements: int = 1 << 28
) -> InferRequest:
    """The request's tensors; ``max_elements`` bounds each one."""
    if not request.inputs:
        raise InferenceProtocolError("the request needs inputs: a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InferenceProtocolError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: give"
            " one per input, in the order of inputs"
        )
    inputs: list[InferInput] = []
    for position, tensor in enumerate(request.inputs):
        parsed = _input(tensor, position, raw[position] if raw else None, max_elements)
        if any(i.name == parsed.name for i in inputs):
            raise InferenceProtocolError(f"input '{parsed.name}' is given twice")
        inputs.append(parsed)
    return InferRequest(
        id=request.id,
        inputs=tuple(inputs),
        outputs=tuple(RequestedOutput(o.name, True) for o in request.outputs),
        parameters=parameters_of(request.parameters),
    )


def _input(
    tensor: pb.ModelInferRequest.InferInputTensor,
    position: int,
    raw: bytes | None,
    max_elements: int,
) -> InferInput:
    name = tensor.name
    if not name:
        raise InferenceProtocolError(f"inputs[{position}] has no name")
    datatype = tensor.datatype
    if datatype not in DATATYPES:
        raise InferenceProtocolError(
            f"input '{name}': datatype {datatype!r} is not one of {sorted(DATATYPES)}"
        )
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape) or len(shape) > _MAX_DIMS:
        raise InferenceProtocolError(
            f"input '{name}': shape must be at most {_MAX_DIMS} sizes of 0 or more,"
            f" got {list(shape)}"
        )
    count = math.prod(shape)
    if count > max_elements:
        raise InferenceProtocolError(
            f"input '{name}' has {count} elements, more than the {max_elements} allowed",
            status=413,
        )
    if raw is not None:
        if tensor.HasField("contents"):
            raise InferenceProtocolError(
                f"input '{name}' has contents while the request carries raw_input_contents:"
                " send every input one way"
            )
        return InferInput(name, datatype, shape, from_raw(name, datatype, shape, count, raw))
    return InferInput(name, datatype, shape, _from_contents(name, datatype, shape, count, tensor))


def _from_contents(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    count: int,
    tensor: pb.ModelInferRequest.InferInputTensor,
) -> Any:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InferenceProtocolError(
            f"input '{name}' is {datatype}, which has no typed contents field: send it in"
            " raw_input_contents (little-endian)"
        )
    contents = tensor.contents
    stray = [f for f in _ALL_FIELDS if f != field and len(getattr(contents, f))]
    if stray:
        raise InferenceProtocolError(
            f"input '{name}' is {datatype}: its elements go in contents.{field}, not {stray[0]}"
        )
    values: Sequence[Any] = getattr(contents, field)
    if len(values) != count:
        raise InferenceProtocolError(
            f"input '{name}' has shape {list(shape)} ({count} elements) but {len(values)}"
            f" elements in contents.{field}"
        )
    if datatype == "BYTES":
        return [bytes(v) for v in values]
    if datatype in INT_RANGES:
        low, high = INT_RANGES[datatype]
        for value in values:
            if not low <= value <= high:
                raise InferenceProtocolError(
                    f"input '{name}': {value} is not a {datatype} (whole numbers {low} to {high})"
                )
    dtype = DATATYPES[datatype]
    if datatype in ("UINT16", "UINT32", "UINT64"):
        # torch builds these only through a wider type; UINT64 above 2**63 goes through
        # its two's complement.
        wide = [v - (1 << 64) if v >= 1 << 63 else v for v in values]
        return torch.tensor(wide, dtype=torch.int64).to(dtype).reshape(shape)
    return torch.tensor(list(values), dtype=dtype).reshape(shape)


# ---------------------------------------------------------------------- responses


def encode_model_infer(
    model_name: str,
    request: InferRequest,
    outputs: Mapping[str, torch.Tensor | Sequence[bytes]],
    *,
    raw: bool,
    model_version: str = "",
) -> pb.ModelInferResponse:
    """The response for a model's named outputs: the requested ones (all when none are
    named), raw when ``raw`` (the request's inputs were) or an output has no typed field."""
    wanted = [o.name for o in request.outputs] or list(outputs)
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise InferenceProtocolError(
            f"the model has no output {missing[0]!r}; it gives {sorted(outputs)}"
        )
    datatypes = {name: datatype_of(outputs[name]) for name in wanted}
    raw = raw or any(d not in CONTENTS_FIELD for d in datatypes.values())
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request.id
    )
    for name in wanted:
        value, datatype = outputs[name], datatypes[name]
        shape = list(value.shape) if isinstance(value, torch.Tensor) else [len(value)]
        tensor = response.outputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            response.raw_output_contents.append(to_raw(value))
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(_elements(value, datatype))
    return response


def _elements(value: torch.Tensor | Sequence[bytes], datatype: str) -> list[Any]:
    if not isinstance(value, torch.Tensor):
        return [bytes(e) for e in value]
    flat = value.detach().to("cpu").reshape(-1)
    if datatype in ("UINT16", "UINT32", "UINT64"):
        wide = flat.to(torch.int64).tolist()  # UINT64 above 2**63 in two's complement
        return [v + (1 << 64) if v < 0 else v for v in wide]
    return list(flat.tolist())
