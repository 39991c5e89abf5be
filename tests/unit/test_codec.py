"""Tensor trees to bytes and back: fidelity, error messages, hostile input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anypu._codec import (
    CodecError,
    decode,
    encode,
    map_tensors,
    pack_envelope,
    signature,
    tree_nbytes,
    unpack_envelope,
    validate,
)
from anypu.errors import InputError

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.complex64,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def _tensor(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    values = torch.randn(*shape, generator=generator) * 10
    return values > 0 if dtype == torch.bool else values.to(dtype)


def _assert_same_tree(got: object, expected: object) -> None:
    assert type(got) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.device.type == "cpu"
        assert torch.equal(got, expected.detach())
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected)
        for key in expected:
            _assert_same_tree(got[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            _assert_same_tree(a, b)
    else:
        assert got == expected


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_round_trips_bit_exactly(dtype: torch.dtype) -> None:
    tensor = _tensor(dtype, (3, 5))
    _assert_same_tree(decode(encode(tensor)), tensor)


def test_nested_tree_with_leaves_keeps_structure_order_and_types() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tree = {
        "z": (base.t(), base[1:, ::2], torch.tensor(3.5), torch.zeros(0, 7)),
        "a": [None, True, 3, 2.5, "text", float("inf")],
        "grad": torch.ones(2, requires_grad=True) * 2,
        "empty": {},
        "nested": {"inner": [torch.tensor([1, 2], dtype=torch.int16)]},
    }
    got = decode(encode(tree))
    _assert_same_tree(got, tree)
    assert got["grad"].requires_grad is False
    assert decode(encode((None,))) == (None,)


def test_named_tuples_and_dict_subclasses_come_back_plain() -> None:
    from collections import OrderedDict, namedtuple

    pair = namedtuple("pair", "left right")
    tree = OrderedDict(x=pair(torch.ones(1), torch.zeros(1)))
    got = decode(encode(tree))
    assert type(got) is dict and type(got["x"]) is tuple
    assert torch.equal(got["x"][0], torch.ones(1))


def test_decode_from_bytes_gives_writable_tensors_that_do_not_alias_the_input() -> None:
    data = encode(torch.zeros(4))
    out = decode(data)
    out.add_(1)
    assert torch.equal(decode(data), torch.zeros(4))


def test_decode_from_bytearray_is_zero_copy() -> None:
    data = bytearray(encode(torch.zeros(4)))
    out = decode(data)
    out.fill_(1.0)
    assert torch.equal(decode(bytes(data)), torch.ones(4))


def test_tensors_are_aligned_for_fast_kernels() -> None:
    data = bytearray(encode((torch.ones(3, dtype=torch.int8), torch.ones(5, dtype=torch.float64))))
    first, second = decode(data)
    assert (second.data_ptr() - first.data_ptr()) % 64 == 0


@pytest.mark.parametrize(
    ("tree", "fragment"),
    [
        (
            (torch.ones(1), {"mask": [1.0, 0.5]}),
            "inputs[1]['mask']: expected a torch.Tensor, got list of floats — convert it with torch.tensor(...)",
        ),
        (
            [np.zeros(3)],
            "inputs[0]: expected a torch.Tensor, got numpy.ndarray — convert it with torch.from_numpy(...)",
        ),
        ({1: torch.ones(1)}, "inputs: dict key 1 is int — keys must be str"),
        ((object(),), "inputs[0]: expected a torch.Tensor, got builtins.object"),
        ((torch.ones(2).to_sparse(),), "inputs[0]: torch.sparse_coo tensors cannot be sent"),
        ((torch.ones(2, device="meta"),), "inputs[0]: a meta tensor has no data"),
    ],
)
def test_user_mistakes_name_the_path_and_the_fix(tree: object, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        encode(tree)
    assert fragment in str(caught.value)
    with pytest.raises(InputError):
        validate(tree)


def test_a_tree_that_contains_itself_is_refused() -> None:
    loop: list[object] = [torch.ones(1)]
    loop.append(loop)
    with pytest.raises(InputError, match="contains itself"):
        encode(loop, name="outputs")


def test_every_truncation_is_a_clear_codec_error() -> None:
    data = encode({"x": torch.arange(6, dtype=torch.float32), "y": [1, "a"]})
    for cut in range(len(data) - 1):
        try:
            decode(data[:cut])
        except CodecError:
            continue
        pytest.fail(f"truncated at {cut} of {len(data)} bytes decoded without error")


def _nested(levels: int) -> object:
    node: object = None
    for _ in range(levels):
        node = {"L": [node]}
    return node


def _forge(structure: object, raw: bytes = b"") -> bytes:
    text = json.dumps(structure).encode()
    head = struct.pack("<8sHI", b"ANYPUTT\0", 1, len(text)) + text
    return head + bytes(-len(head) % 64) + raw


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        ({"T": ["float32", [10**9, 10**9], 0]}, "runs past the end"),
        ({"T": ["float32", [-1], 0]}, "invalid tensor shape"),
        ({"T": ["float32", [2.0], 0]}, "invalid tensor shape"),
        ({"T": ["float32", [1] * 40, 0]}, "invalid tensor shape"),
        ({"T": ["pickle", [1], 0]}, "unknown dtype"),
        ({"T": ["float32", [1], 3]}, "invalid tensor offset"),
        ({"X": []}, "unknown node tag"),
        ({"D": [[1, 2]]}, "malformed dict entry"),
        ([1, 2], "malformed node"),
        (_nested(80), "nested deeper"),
    ],
)
def test_hostile_structures_are_refused_before_allocating(structure: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(_forge(structure, bytes(64)))


def test_bad_magic_version_and_bool_bytes_are_refused() -> None:
    data = bytearray(encode(torch.ones(2)))
    with pytest.raises(CodecError, match="bad magic"):
        decode(b"NOTANYPU" + bytes(data[8:]))
    data[8] = 9
    with pytest.raises(CodecError, match="version 9"):
        decode(bytes(data))
    with pytest.raises(CodecError, match="bool tensor"):
        decode(_forge({"T": ["bool", [2], 0]}, bytes([1, 7]) + bytes(62)))


@settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_corrupted_bytes_decode_or_raise_codec_error_only(position: int, value: int) -> None:
    data = bytearray(encode({"a": torch.arange(4.0), "b": [torch.ones(2, 2, dtype=torch.int8)]}))
    data[position % len(data)] = value
    try:
        decode(bytes(data))
    except CodecError:
        pass


def test_signature_tracks_structure_shapes_dtypes_and_leaf_values() -> None:
    x = torch.ones(2, 3)
    base = signature((x, {"k": 1}))
    assert base == signature((torch.zeros(2, 3), {"k": 1}))
    assert hash(base) == hash(signature((torch.zeros(2, 3), {"k": 1})))
    different = [
        (torch.ones(3, 2), {"k": 1}),
        (x.double(), {"k": 1}),
        [x, {"k": 1}],
        (x, {"j": 1}),
        (x, {"k": 2}),
        (x, {"k": True}),
        (x, {"k": 1.0}),
    ]
    assert len({signature(tree) for tree in different} | {base}) == len(different) + 1


def test_tree_nbytes_and_map_tensors() -> None:
    tree = (torch.ones(4, dtype=torch.float64), {"m": [torch.ones(3, dtype=torch.bfloat16)]}, 7)
    assert tree_nbytes(tree) == 4 * 8 + 3 * 2
    doubled = map_tensors(tree, lambda t: t * 2)
    assert torch.equal(doubled[1]["m"][0], torch.full((3,), 2, dtype=torch.bfloat16))
    assert doubled[2] == 7


def test_envelope_round_trip_and_refusals() -> None:
    data = pack_envelope({"format": "torchscript", "device_kinds": ["cpu"]}, b"payload")
    header, payload = unpack_envelope(data)
    assert header == {"device_kinds": ["cpu"], "format": "torchscript"}
    assert bytes(payload) == b"payload"
    with pytest.raises(CodecError, match="bad magic"):
        unpack_envelope(b"x" * 40)
    with pytest.raises(CodecError, match="truncated"):
        unpack_envelope(data[:20])
    with pytest.raises(ValueError, match="format"):
        pack_envelope({"kind": "x"}, b"")


def test_encoded_parts_stream_in_chunks_and_come_back_as_one_writable_buffer():
    import hashlib

    from anypu import _codec
    from anypu.protos import convert

    tree = {"a": torch.arange(1000, dtype=torch.float32), "b": (torch.ones(3, 5), 7)}
    parts = _codec.encode_parts(tree)
    assert b"".join(parts) == _codec.encode(tree)
    assert any(part.obj is not None and part.nbytes == 4000 for part in parts)  # no copy
    digest = hashlib.sha256(_codec.encode(tree)).hexdigest()
    chunks = list(convert.blob_chunks(digest, parts, 512))
    assert [len(c.data) for c in chunks[:-1]] == [512] * (len(chunks) - 1)
    assert chunks[0].digest == digest and chunks[0].total_bytes == sum(p.nbytes for p in parts)
    joined = convert.join_blob_chunks(chunks, digest)
    assert isinstance(joined, bytearray) and bytes(joined) == _codec.encode(tree)
    back = _codec.decode(joined)
    assert torch.equal(back["a"], tree["a"]) and back["b"][1] == 7
    before = bytes(joined)
    back["a"].add_(1)  # the tensor is a view of the buffer: nothing was copied
    assert bytes(joined) != before
    with pytest.raises(ValueError, match="ended after"):
        convert.join_blob_chunks(chunks[:-1], digest)
    empty = list(convert.blob_chunks("d" * 64, b"", 512))
    assert len(empty) == 1 and empty[0].total_bytes == 0
