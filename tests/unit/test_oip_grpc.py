"""The Open Inference Protocol's gRPC messages to tensors and back (``anypu._oip_grpc``),
against the specification's rules for typed and raw contents."""

from __future__ import annotations

import re
import struct

import grpc
import pytest
import torch

from anypu._oip import InferenceProtocolError
from anypu._oip_grpc import encode_model_infer, grpc_code, parse_model_infer, pb


def _request(**inputs: tuple[str, list[int], dict]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="1")
    for name, (datatype, shape, contents) in inputs.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        for field, values in contents.items():
            getattr(tensor.contents, field).extend(values)
    return request


def test_typed_contents_become_tensors_of_their_datatype():
    parsed = parse_model_infer(
        _request(
            a=("FP32", [2, 2], {"fp32_contents": [1.0, 2.0, 3.0, 4.0]}),
            b=("INT8", [3], {"int_contents": [-128, 0, 127]}),
            c=("UINT64", [1], {"uint64_contents": [2**64 - 1]}),
            d=("BOOL", [2], {"bool_contents": [True, False]}),
            e=("BYTES", [2], {"bytes_contents": [b"hi", b"\xff"]}),
        )
    )
    a, b, c, d, e = (i.value for i in parsed.inputs)
    assert a.dtype == torch.float32 and a.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert b.dtype == torch.int8 and b.tolist() == [-128, 0, 127]
    assert c.dtype == torch.uint64 and c.view(torch.int64).tolist() == [-1]
    assert d.tolist() == [True, False]
    assert e == [b"hi", b"\xff"]
    assert parsed.id == "1"


def test_raw_contents_are_little_endian_and_bytes_length_prefixed():
    request = _request(a=("FP16", [2], {}), s=("BYTES", [2], {}))
    request.raw_input_contents.extend(
        [
            torch.tensor([1.5, -2.0], dtype=torch.float16).numpy().tobytes(),
            struct.pack("<I", 1) + b"x" + struct.pack("<I", 0),
        ]
    )
    a, s = (i.value for i in parse_model_infer(request).inputs)
    assert a.dtype == torch.float16 and a.tolist() == [1.5, -2.0]
    assert s == [b"x", b""]


@pytest.mark.parametrize(
    ("inputs", "raw", "says"),
    [
        ({"a": ("FP32", [3], {"fp32_contents": [1.0]})}, None, "(3 elements) but 1"),
        ({"a": ("FP32", [1], {"fp64_contents": [1.0]})}, None, "not fp64_contents"),
        ({"a": ("INT8", [1], {"int_contents": [300]})}, None, "is not a INT8"),
        ({"a": ("FP16", [1], {})}, None, "raw_input_contents"),
        ({"a": ("FLOAT", [1], {})}, None, "datatype 'FLOAT'"),
        ({"a": ("FP32", [1], {"fp32_contents": [1.0]})}, [b"\0\0\0\0"], "send every input"),
        ({"a": ("FP32", [2], {})}, [b"\0\0\0\0"], "binary_data_size is 4"),
        ({"a": ("FP32", [1], {}), "b": ("FP32", [1], {})}, [b"\0\0\0\0"], "2 inputs"),
        ({}, None, "needs inputs"),
    ],
)
def test_bad_requests_are_refused_with_what_to_change(inputs, raw, says):
    request = _request(**inputs)
    if raw:
        request.raw_input_contents.extend(raw)
    with pytest.raises(InferenceProtocolError, match=re.escape(says)) as refused:
        parse_model_infer(request)
    assert grpc_code(refused.value.status) == grpc.StatusCode.INVALID_ARGUMENT


def test_outputs_come_back_typed_or_raw_as_the_inputs_came():
    request = parse_model_infer(_request(a=("FP32", [1], {"fp32_contents": [1.0]})))
    outputs = {"y": torch.tensor([[1.0, 2.0]]), "n": torch.tensor([7], dtype=torch.uint32)}
    typed = encode_model_infer("m", request, outputs, raw=False, model_version="2")
    assert typed.model_version == "2" and not typed.raw_output_contents
    by_name = {o.name: o for o in typed.outputs}
    assert list(by_name["y"].shape) == [1, 2] and list(by_name["y"].contents.fp32_contents) == [
        1.0,
        2.0,
    ]
    assert by_name["n"].datatype == "UINT32" and list(by_name["n"].contents.uint_contents) == [7]
    raw = encode_model_infer("m", request, outputs, raw=True)
    assert raw.raw_output_contents[0] == struct.pack("<2f", 1.0, 2.0)
    assert not raw.outputs[0].HasField("contents")


def test_a_half_precision_output_sends_every_output_raw():
    request = parse_model_infer(_request(a=("FP32", [1], {"fp32_contents": [1.0]})))
    outputs = {"h": torch.tensor([1.0], dtype=torch.float16), "y": torch.tensor([2.0])}
    response = encode_model_infer("m", request, outputs, raw=False)
    assert len(response.raw_output_contents) == 2  # all or none, per the protocol


def test_asking_for_an_output_the_model_lacks_is_refused():
    request = _request(a=("FP32", [1], {"fp32_contents": [1.0]}))
    request.outputs.add(name="nope")
    with pytest.raises(InferenceProtocolError, match="no output 'nope'"):
        encode_model_infer("m", parse_model_infer(request), {"y": torch.ones(1)}, raw=False)
