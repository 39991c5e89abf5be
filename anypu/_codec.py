"""Tensor trees to bytes and back, without pickle.

A *tree* is a ``torch.Tensor``, or a tuple/list/dict (``str`` keys) of trees, or a
``None``/``bool``/``int``/``float``/``str`` leaf. Tuple and dict subclasses (named tuples,
``OrderedDict``, model-output classes) are accepted and come back as plain tuples and dicts.

Wire format (all integers little-endian)::

    b"ANYPUTT\\0"  u16 version  u32 structure length   structure (UTF-8 JSON)
    zero padding to a multiple of 64           raw tensor bytes, each at a 64-byte-aligned
                                               offset, no padding after the last one

The structure describes the tree; a tensor node is ``{"T": [dtype, shape, offset]}`` with
the offset counted from the start of the raw section. Tensor bytes are written as the
tensor's contiguous memory viewed as ``uint8``, so dtypes numpy lacks (bfloat16, float8,
…) cost nothing special: the real dtype is in the structure.

The same module frames model artifacts: ``pack_envelope`` puts a small JSON header (the
payload's format and the device kinds it runs on) in front of an exported model, so the
agent knows how to load it before it touches the payload.

Decoding trusts nothing: every length, offset, shape and dtype is checked against the
size of the data before anything is allocated, so hostile bytes raise ``CodecError``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Hashable
from typing import Any

import torch

from anypu.errors import InputError

__all__ = [
    "CodecError",
    "Tree",
    "decode",
    "encode",
    "map_tensors",
    "pack_envelope",
    "signature",
    "tree_nbytes",
    "unpack_envelope",
    "validate",
]

Tree = Any
"""A tensor, a leaf, or a nested tuple/list/dict of them (see the module docstring)."""

MAGIC = b"ANYPUTT\0"
VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_ALIGN = 64
_MAX_DEPTH = 64
_MAX_NDIM = 32
_MAX_DIM = 2**40

_DTYPES: dict[str, torch.dtype] = {
    name: dtype
    for name in (
        "float64 float32 float16 bfloat16 complex128 complex64 complex32 "
        "int64 int32 int16 int8 uint64 uint32 uint16 uint8 bool "
        "float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu"
    ).split()
    if isinstance(dtype := getattr(torch, name, None), torch.dtype)
}
_DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in _DTYPES.items()}
_LEAF_TYPES = (type(None), bool, int, float, str)


class CodecError(ValueError):
    """The bytes are not a valid encoded tensor tree (truncated, corrupt or hostile)."""


# ----------------------------------------------------------------------------- encode


def encode(tree: Tree, name: str = "inputs") -> bytes:
    """Serialise ``tree`` to bytes. ``name`` is how error messages refer to the root.

    Raises ``InputError`` naming the path of the first value that is not allowed.
    """
    return b"".join(encode_parts(tree, name))


def encode_parts(tree: Tree, name: str = "inputs") -> list[memoryview]:
    """``encode``'s bytes as consecutive parts, the tensors' own memory among them (no
    copy): what a large payload is hashed and streamed from without holding it twice.
    The parts are valid while the tensors are alive and unchanged."""
    chunks: list[memoryview] = []
    offset = 0

    def add(tensor: torch.Tensor, path: str) -> list[Any]:
        nonlocal offset
        flat = _plain_tensor(tensor, path)
        if not flat.numel():
            return [_DTYPE_NAMES[flat.dtype], list(flat.shape), 0]
        # Pad before, never after, a tensor: the data then ends at the last tensor's last
        # byte, so any truncation is detected.
        pad = -offset % _ALIGN
        if pad:
            chunks.append(memoryview(bytes(pad)))
            offset += pad
        raw = flat.reshape(-1).view(torch.uint8).numpy()
        chunks.append(memoryview(raw.data).cast("B"))
        start = offset
        offset += raw.nbytes
        return [_DTYPE_NAMES[flat.dtype], list(flat.shape), start]

    structure = _describe(tree, name, add, 0, set())
    header = json.dumps(structure, separators=(",", ":"), allow_nan=True).encode()
    prefix = _PREFIX.pack(MAGIC, VERSION, len(header))
    pad = -(len(prefix) + len(header)) % _ALIGN if chunks else 0
    return [memoryview(prefix + header + bytes(pad)), *chunks]


def validate(tree: Tree, name: str = "inputs") -> None:
    """Raise ``InputError`` naming the first value in ``tree`` that ``encode`` would refuse."""
    _describe(tree, name, _check_tensor, 0, set())


def _plain_tensor(tensor: torch.Tensor, path: str) -> torch.Tensor:
    _check_tensor(tensor, path)
    return tensor.detach().cpu().contiguous()


def _check_tensor(tensor: torch.Tensor, path: str) -> None:
    if tensor.layout != torch.strided:
        raise InputError(
            f"{path}: {tensor.layout} tensors cannot be sent — convert it with .to_dense()"
        )
    if tensor.is_quantized:
        raise InputError(f"{path}: quantized tensors cannot be sent — use .dequantize() first")
    if tensor.is_nested:
        raise InputError(f"{path}: nested tensors cannot be sent — pad them into one tensor")
    if tensor.device.type == "meta":
        raise InputError(f"{path}: a meta tensor has no data — pass a real tensor")
    if tensor.dtype not in _DTYPE_NAMES:
        raise InputError(f"{path}: dtype {tensor.dtype} is not supported — cast it with .to(...)")


def _describe(value: Any, path: str, add: Any, depth: int, active: set[int]) -> Any:
    if isinstance(value, torch.Tensor):
        return {"T": add(value, path)}
    if isinstance(value, _LEAF_TYPES):
        return value
    if depth >= _MAX_DEPTH:
        raise InputError(f"{path}: nested more than {_MAX_DEPTH} levels deep — flatten it")
    if isinstance(value, (tuple, list, dict)):
        if id(value) in active:
            raise InputError(f"{path}: the structure contains itself — pass a tree, not a cycle")
        active.add(id(value))
        try:
            return _describe_container(value, path, add, depth, active)
        finally:
            active.discard(id(value))
    raise InputError(f"{path}: expected a torch.Tensor, got {_describe_type(value)}")


def _describe_container(
    value: tuple[Any, ...] | list[Any] | dict[Any, Any],
    path: str,
    add: Any,
    depth: int,
    active: set[int],
) -> dict[str, Any]:
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(
                    f"{path}: dict key {key!r} is {type(key).__name__} — keys must be str"
                )
            items.append([key, _describe(item, f"{path}[{key!r}]", add, depth + 1, active)])
        return {"D": items}
    if value and all(isinstance(v, (int, float)) for v in value):
        raise InputError(f"{path}: expected a torch.Tensor, got {_describe_type(value)}")
    tag = "L" if isinstance(value, list) else "U"
    return {
        tag: [_describe(v, f"{path}[{i}]", add, depth + 1, active) for i, v in enumerate(value)]
    }


def _describe_type(value: Any) -> str:
    """Name the offending value and say how to turn it into a tensor."""
    kind = type(value).__name__
    if isinstance(value, (list, tuple)):
        inner = sorted({type(v).__name__ for v in value})
        kinds = "s or ".join(inner) + "s" if inner else "nothing"
        return f"{kind} of {kinds} — convert it with torch.tensor(...)"
    if type(value).__module__ == "numpy":
        return f"numpy.{kind} — convert it with torch.from_numpy(...)"
    return (
        f"{type(value).__module__}.{kind} — pass tensors, tuples/lists/dicts of tensors, "
        "or None/bool/int/float/str"
    )


# ----------------------------------------------------------------------------- decode


def decode(data: bytes | bytearray | memoryview) -> Tree:
    """Rebuild a tree from ``encode``'s bytes. Tensors come back on the CPU.

    Tensors share memory with ``data`` when it is writable (``bytearray``); read-only
    ``bytes`` are copied once so the tensors can be written to safely.
    """
    view = memoryview(data).cast("B")
    if len(view) < _PREFIX.size:
        raise CodecError(f"encoded tree is {len(view)} bytes, shorter than its header")
    magic, version, header_len = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise CodecError("not an anypu tensor tree (bad magic bytes)")
    if version != VERSION:
        raise CodecError(f"tensor tree format version {version}; this anypu reads {VERSION}")
    head_end = _PREFIX.size + header_len
    if head_end > len(view):
        raise CodecError("encoded tree is truncated inside its structure")
    raw_start = head_end + (-head_end % _ALIGN)
    raw_len = max(0, len(view) - raw_start)
    try:
        structure = json.loads(bytes(view[_PREFIX.size : head_end]))
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"the structure of the encoded tree is not valid JSON: {exc}") from None
    buffer: Any = None
    if raw_len:
        buffer = view[raw_start:] if not view.readonly else bytearray(view[raw_start:])
    return _build(structure, buffer, raw_len, 0)


def _build(node: Any, buffer: Any, raw_len: int, depth: int) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if depth >= _MAX_DEPTH:
        raise CodecError(f"encoded tree is nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(node, dict) or len(node) != 1:
        raise CodecError(f"malformed node in encoded tree: {str(node)[:80]}")
    ((tag, body),) = node.items()
    if not isinstance(body, list):
        raise CodecError(f"malformed {tag!r} node in encoded tree")
    if tag == "T":
        return _build_tensor(body, buffer, raw_len)
    if tag in ("L", "U"):
        items = [_build(item, buffer, raw_len, depth + 1) for item in body]
        return items if tag == "L" else tuple(items)
    if tag == "D":
        out: dict[str, Any] = {}
        for pair in body:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise CodecError("malformed dict entry in encoded tree")
            out[pair[0]] = _build(pair[1], buffer, raw_len, depth + 1)
        return out
    raise CodecError(f"unknown node tag {tag!r} in encoded tree")


def _build_tensor(body: list[Any], buffer: Any, raw_len: int) -> torch.Tensor:
    if len(body) != 3:
        raise CodecError("malformed tensor node in encoded tree")
    dtype_name, shape, offset = body
    dtype = _DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None:
        raise CodecError(f"unknown dtype {dtype_name!r} in encoded tree")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or not all(type(d) is int and 0 <= d <= _MAX_DIM for d in shape)
    ):
        raise CodecError(f"invalid tensor shape {str(shape)[:80]} in encoded tree")
    if type(offset) is not int or offset < 0 or offset % _ALIGN:
        raise CodecError(f"invalid tensor offset {offset!r} in encoded tree")
    numel = math.prod(shape)
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    nbytes = numel * dtype.itemsize
    if offset + nbytes > raw_len:
        raise CodecError(
            f"tensor of shape {shape} ({nbytes} bytes at offset {offset}) runs past the "
            f"end of the data ({raw_len} bytes): the encoded tree is truncated"
        )
    if dtype == torch.bool:
        raw = torch.frombuffer(buffer, dtype=torch.uint8, count=nbytes, offset=offset)
        if bool((raw > 1).any()):
            raise CodecError("bool tensor holds bytes other than 0 and 1")
    return torch.frombuffer(buffer, dtype=dtype, count=numel, offset=offset).view(shape)


# ----------------------------------------------------------------------------- inspect


def tree_nbytes(tree: Tree) -> int:
    """Bytes of tensor data in ``tree`` (what ``encode`` will carry, less its padding)."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tree_nbytes(v) for v in tree.values())
    if isinstance(tree, (tuple, list)):
        return sum(tree_nbytes(v) for v in tree)
    return 0


def map_tensors(tree: Tree, fn: Callable[[torch.Tensor], Any]) -> Tree:
    """``tree`` with every tensor replaced by ``fn(tensor)``; containers become plain ones."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: map_tensors(v, fn) for k, v in tree.items()}
    if isinstance(tree, list):
        return [map_tensors(v, fn) for v in tree]
    if isinstance(tree, tuple):
        return tuple(map_tensors(v, fn) for v in tree)
    return tree


def signature(tree: Tree) -> Hashable:
    """Structure, shapes, dtypes and non-tensor leaf values of ``tree``: a cache key.

    Leaf values are part of it because an exported model specialises on them.
    """
    if isinstance(tree, torch.Tensor):
        return (tree.dtype, tuple(tree.shape))
    if isinstance(tree, dict):
        return ("D", tuple((k, signature(v)) for k, v in tree.items()))
    if isinstance(tree, tuple):
        return ("U", tuple(signature(v) for v in tree))
    if isinstance(tree, list):
        return ("L", tuple(signature(v) for v in tree))
    if isinstance(tree, _LEAF_TYPES):
        # type is part of the key because True == 1 == 1.0 hash alike.
        return (type(tree).__name__, tree)
    raise InputError(f"expected a torch.Tensor, got {_describe_type(tree)}")


# ----------------------------------------------------------------------------- envelope

ENVELOPE_MAGIC = b"ANYPUMD\0"
_MAX_ENVELOPE_HEADER = 1 << 16


def pack_envelope(header: dict[str, Any], payload: bytes) -> bytes:
    """Frame ``payload`` behind a JSON ``header`` (which must hold a str ``format``)."""
    if not isinstance(header.get("format"), str):
        raise ValueError("an envelope header needs a str 'format'")
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if len(text) > _MAX_ENVELOPE_HEADER:
        raise ValueError(f"envelope header is {len(text)} bytes; at most {_MAX_ENVELOPE_HEADER}")
    return b"".join([_PREFIX.pack(ENVELOPE_MAGIC, VERSION, len(text)), text, payload])


def unpack_envelope(data: bytes | bytearray | memoryview) -> tuple[dict[str, Any], memoryview]:
    """Split ``pack_envelope``'s bytes into the header and a zero-copy view of the payload."""
    view = memoryview(data).cast("B")
    if len(view) < _PREFIX.size:
        raise CodecError(f"artifact is {len(view)} bytes, shorter than its header")
    magic, version, header_len = _PREFIX.unpack_from(view)
    if magic != ENVELOPE_MAGIC:
        raise CodecError("not an anypu model artifact (bad magic bytes)")
    if version != VERSION:
        raise CodecError(f"artifact envelope version {version}; this anypu reads {VERSION}")
    end = _PREFIX.size + header_len
    if header_len > _MAX_ENVELOPE_HEADER or end > len(view):
        raise CodecError("artifact is truncated inside its header")
    try:
        header = json.loads(bytes(view[_PREFIX.size : end]))
    except ValueError as exc:
        raise CodecError(f"artifact header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("format"), str):
        raise CodecError("artifact header does not say which format its payload has")
    return header, view[end:]
