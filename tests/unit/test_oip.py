"""The Open Inference Protocol (v2) codec, held to the specification's own examples
(kserve/open-inference-protocol ``inference_rest.md``; Triton's binary tensor extension,
``extension_binary_data.md``), written from those texts, not from the codec."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from anypu._oip import (
    HEADER_LENGTH,
    InferenceProtocolError,
    encode_infer_response,
    error_body,
    parse_infer_request,
)


def _binary_request(header: dict, *chunks: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), len(head)


def test_the_binary_extension_example_parses_to_its_tensors() -> None:
    # The extension's example: a 2x2 UINT32 (16 bytes) and three BOOLs (3 bytes) after
    # the JSON, and output0 asked for as binary.
    body, length = _binary_request(
        {
            "model_name": "mymodel",
            "inputs": [
                {
                    "name": "input0",
                    "shape": [2, 2],
                    "datatype": "UINT32",
                    "parameters": {"binary_data_size": 16},
                },
                {
                    "name": "input1",
                    "shape": [3],
                    "datatype": "BOOL",
                    "parameters": {"binary_data_size": 3},
                },
            ],
            "outputs": [{"name": "output0", "parameters": {"binary_data": True}}],
        },
        struct.pack("<4I", 1, 2, 3, 4),
        bytes([1, 0, 1]),
    )
    request = parse_infer_request(body, length)
    first, second = request.inputs
    assert (first.name, first.datatype, first.shape) == ("input0", "UINT32", (2, 2))
    assert isinstance(first.value, torch.Tensor)
    assert first.value.to(torch.int64).tolist() == [[1, 2], [3, 4]]
    assert isinstance(second.value, torch.Tensor)
    assert second.value.tolist() == [True, False, True]
    assert request.outputs[0].name == "output0" and request.outputs[0].binary

    outputs = {"output0": torch.tensor([[1.0, 1.1], [2.0, 2.1], [3.0, 3.1]])}
    answer, headers = encode_infer_response("mymodel", request, outputs)
    assert headers["Content-Type"] == "application/octet-stream"
    json_length = int(headers[HEADER_LENGTH])
    document = json.loads(answer[:json_length])
    (out,) = document["outputs"]
    assert document["model_name"] == "mymodel"
    assert (out["name"], out["datatype"], out["shape"]) == ("output0", "FP32", [3, 2])
    assert out["parameters"]["binary_data_size"] == 24 and "data" not in out
    values = struct.unpack("<6f", answer[json_length:])
    assert values == pytest.approx([1.0, 1.1, 2.0, 2.1, 3.0, 3.1])


def test_the_json_example_in_nested_or_flat_data_and_its_json_response() -> None:
    # The specification's example, with its missing comma and its short BOOL data mended.
    for data in ([1, 2, 3, 4], [[1, 2], [3, 4]]):
        body = {
            "id": "42",
            "inputs": [
                {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": data},
                {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True, False, True]},
            ],
            "outputs": [{"name": "output0"}],
        }
        request = parse_infer_request(json.dumps(body).encode())
        assert request.id == "42"
        value = request.inputs[0].value
        assert isinstance(value, torch.Tensor) and value.dtype == torch.uint32
        assert value.to(torch.int64).tolist() == [[1, 2], [3, 4]]
    outputs = {
        "output0": torch.tensor([[1.0, 1.5], [2.0, 2.5], [3.0, 3.5]]),
        "extra": torch.ones(1),
    }
    answer, headers = encode_infer_response("mymodel", request, outputs)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(answer) == {
        "model_name": "mymodel",
        "id": "42",
        "outputs": [
            {
                "name": "output0",
                "datatype": "FP32",
                "shape": [3, 2],
                "data": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5],
            }
        ],  # only what was asked for
    }


def test_without_requested_outputs_every_output_comes_back_binary_if_asked_so() -> None:
    body = {
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [7]}],
        "parameters": {"binary_data_output": True},
    }
    request = parse_infer_request(json.dumps(body).encode())
    outputs = {"a": torch.tensor([1, -2], dtype=torch.int64), "b": torch.tensor([True])}
    answer, headers = encode_infer_response("m", request, outputs)
    length = int(headers[HEADER_LENGTH])
    described = json.loads(answer[:length])["outputs"]
    assert [o["name"] for o in described] == ["a", "b"]
    assert [o["parameters"]["binary_data_size"] for o in described] == [16, 1]
    assert answer[length:] == struct.pack("<2q", 1, -2) + b"\x01"


def test_bytes_travel_as_strings_in_json_and_length_prefixed_in_binary() -> None:
    words = [b"hello", b"", b"\xe4\xb8\x96"]
    prefixed = b"".join(struct.pack("<I", len(w)) + w for w in words)
    body, length = _binary_request(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [3],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(prefixed)},
                },
                {"name": "more", "shape": [1, 2], "datatype": "BYTES", "data": [["a", "b"]]},
            ]
        },
        prefixed,
    )
    request = parse_infer_request(body, length)
    assert request.inputs[0].value == words and request.inputs[1].value == [b"a", b"b"]
    answer, _ = encode_infer_response("m", request, {"echo": words})
    assert json.loads(answer)["outputs"][0]["data"] == ["hello", "", "世"]
    with pytest.raises(InferenceProtocolError, match='"binary_data": true'):
        encode_infer_response("m", request, {"raw": [b"\xff\xfe"]})


def test_half_precision_and_wide_integers_come_through_json_exactly() -> None:
    body = {
        "inputs": [
            {"name": "h", "shape": [2], "datatype": "FP16", "data": [0.5, -2]},
            {"name": "b", "shape": [1], "datatype": "BF16", "data": [1.0]},
            {"name": "u", "shape": [2], "datatype": "UINT64", "data": [0, 2**64 - 1]},
        ]
    }
    request = parse_infer_request(json.dumps(body).encode())
    half, brain, wide = (i.value for i in request.inputs)
    assert isinstance(half, torch.Tensor) and half.dtype == torch.float16
    assert isinstance(brain, torch.Tensor) and brain.dtype == torch.bfloat16
    answer, _ = encode_infer_response("m", request, {"u": wide, "h": half})
    described = {o["name"]: o for o in json.loads(answer)["outputs"]}
    assert described["u"]["data"] == [0, 2**64 - 1] and described["u"]["datatype"] == "UINT64"
    assert described["h"] == {"name": "h", "datatype": "FP16", "shape": [2], "data": [0.5, -2.0]}


def _one_input(**fields: object) -> bytes:
    tensor = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0], **fields}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"inputs": []}', "non-empty list"),
        (_one_input(datatype="FLOAT"), "datatype 'FLOAT' is not one of"),
        (_one_input(shape=[3]), r"shape \[3\] \(3 elements\) but 2 elements"),
        (_one_input(shape=[-1, 2]), "whole numbers of 0 or more"),
        (_one_input(datatype="UINT8", data=[1, 300]), "300 is not a UINT8"),
        (_one_input(datatype="INT32", data=[1, 1.5]), "1.5 is not a INT32"),
        (_one_input(datatype="INT32", data=[1, True]), "True is not a INT32"),
        (_one_input(datatype="BOOL", data=[1, 0]), "true or false"),
        (_one_input(data=["a", "b"]), "must be numbers"),
        (_one_input(datatype="BYTES", data=[1, 2]), "JSON strings"),
        (_one_input(name=""), "'name'"),
        (
            json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}).encode(),
            "has no 'data'",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                        {"name": "x", "shape": [1], "datatype": "FP32", "data": [2]},
                    ]
                }
            ).encode(),
            "given twice",
        ),
        (
            json.dumps(
                {"id": 42, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
            ).encode(),
            "'id' must be a string",
        ),
    ],
)
def test_a_bad_request_is_refused_with_a_message_naming_what_to_change(
    body: bytes, message: str
) -> None:
    with pytest.raises(InferenceProtocolError, match=message) as raised:
        parse_infer_request(body)
    assert raised.value.status == 400
    assert json.loads(error_body(str(raised.value))) == {"error": str(raised.value)}


def test_binary_sections_that_do_not_add_up_are_refused() -> None:
    header = {
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
        ]
    }
    body, length = _binary_request(header, struct.pack("<2f", 1, 2))
    assert parse_infer_request(body, length).inputs[0].value.tolist() == [1.0, 2.0]  # type: ignore[union-attr]
    with pytest.raises(
        InferenceProtocolError, match="but the inputs' binary_data_size add up to 8"
    ):
        parse_infer_request(body + b"\x00", length)
    with pytest.raises(InferenceProtocolError, match="no more than the 4 left"):
        parse_infer_request(body[:-4], length)
    short = json.loads(body[:length])
    short["inputs"][0]["parameters"]["binary_data_size"] = 4
    body2, length2 = _binary_request(short, b"\x00" * 4)
    with pytest.raises(InferenceProtocolError, match="is 8 bytes but binary_data_size is 4"):
        parse_infer_request(body2, length2)
    with pytest.raises(InferenceProtocolError, match=f"{HEADER_LENGTH} is 999"):
        parse_infer_request(body, 999)
    cut = struct.pack("<I", 9) + b"abc"
    text, text_length = _binary_request(
        {
            "inputs": [
                {
                    "name": "t",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(cut)},
                }
            ]
        },
        cut,
    )
    with pytest.raises(InferenceProtocolError, match="says 9 bytes but 3 are left"):
        parse_infer_request(text, text_length)


def test_a_tensor_over_the_bound_is_too_large_and_an_unknown_output_is_named() -> None:
    with pytest.raises(InferenceProtocolError, match="more than the 1 allowed") as raised:
        parse_infer_request(_one_input(), max_elements=1)
    assert raised.value.status == 413
    request = parse_infer_request(
        json.dumps(
            {
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                "outputs": [{"name": "nope"}],
            }
        ).encode()
    )
    with pytest.raises(InferenceProtocolError, match="no output 'nope'; it gives \\['y'\\]"):
        encode_infer_response("m", request, {"y": torch.ones(1)})
