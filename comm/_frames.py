"""Frames: a versioned binary head, a JSON header and a byte payload.

The agent and its worker processes speak frames over pipes; a client holding a lease
speaks them to a worker over TCP (or TLS: an ``ssl.SSLSocket`` in place of the
descriptor). No pickle crosses this boundary: a hostile model's bytes are only ever
handed to the safe artifact loader.

Layout: ``b"AP"``, the frame version (u16), the header's length (u32) and the payload's
(u64), little-endian; then the UTF-8 JSON header (an object) and the payload. A frame of
another version is refused with a message naming both versions, so a client and a worker
of different anypu releases fail clearly rather than misread each other. A frame from a
peer that is not trusted is read with a size limit.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

from anypu.protos import messages as m

__all__ = [
    "FRAME_VERSION",
    "Channel",
    "FrameError",
    "read_frame",
    "result_from_frame",
    "result_to_frame",
    "write_frame",
]

FRAME_VERSION = 1
_MAGIC = b"AP"
_HEAD = struct.Struct("<2sHIQ")  # magic, version, header length, payload length
_MAX_HEADER = 1 << 20

#: A pipe or plain socket's descriptor (raw ``os`` calls: no buffering to get around), or
#: a socket object, which TLS needs.
Channel = int | socket.socket


class FrameError(ValueError):
    """The bytes are not a frame this side can read (another protocol or version, too big)."""


def write_frame(fd: Channel, header: dict[str, Any], payload: bytes = b"") -> None:
    head = json.dumps(header).encode()
    data = b"".join((_HEAD.pack(_MAGIC, FRAME_VERSION, len(head), len(payload)), head, payload))
    if not isinstance(fd, int):
        fd.sendall(data)
        return
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: Channel, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        want = min(remaining, 1 << 20)
        chunk = os.read(fd, want) if isinstance(fd, int) else fd.recv(want)
        if not chunk:
            raise EOFError("the other end of the frame channel closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def read_frame(fd: Channel, max_payload: int | None = None) -> tuple[dict[str, Any], bytes]:
    """The next frame; ``max_payload``: refuse a bigger one (a peer that is not trusted).

    Raises ``EOFError`` when the channel closed, ``FrameError`` for anything not a frame
    of this version.
    """
    magic, version, head_len, payload_len = _HEAD.unpack(_read_exact(fd, _HEAD.size))
    if magic != _MAGIC:
        raise FrameError("not an anypu frame (another protocol on this port?)")
    if version != FRAME_VERSION:
        raise FrameError(
            f"frame version {version}, this side speaks {FRAME_VERSION}: run the same anypu"
            " release on both ends"
        )
    if max_payload is not None and (head_len > _MAX_HEADER or payload_len > max_payload):
        raise FrameError(f"frame of {head_len} + {payload_len} bytes refused: too large")
    header = json.loads(_read_exact(fd, head_len))
    if not isinstance(header, dict):
        raise FrameError("a frame's header must be a JSON object")
    payload = _read_exact(fd, payload_len) if payload_len else b""
    return header, payload


# ---------------------------------------------------------------- a call's result as a frame

_ADDRESS_KEYS = ("node_id", "device_id")


def result_to_frame(result: m.JobResult | None) -> tuple[dict[str, Any], bytes]:
    """A result as a frame: its ids, where it ran and its outcome's fields, then the
    outputs; None (the lease is not held there) as ``lease_lost``."""
    if result is None:
        return {"lease_lost": True}, b""
    header = {"job_id": result.job_id, "attempt": result.attempt}
    header.update((k, getattr(result, k)) for k in _ADDRESS_KEYS)
    return header | result.outcome.fields(), result.outputs


def result_from_frame(header: dict[str, Any], payload: bytes, **where: str) -> m.JobResult | None:
    """The result ``result_to_frame`` wrote (``where``: ``node_id``/``device_id`` in place
    of the frame's), or None when the worker does not hold the lease."""
    if header.get("lease_lost"):
        return None
    if "error" in header:
        raise ConnectionError(str(header["error"]))
    address = {k: str(header.get(k, "")) for k in _ADDRESS_KEYS} | where
    outcome = m.Outcome.from_fields(header)
    return m.JobResult(str(header["job_id"]), int(header["attempt"]), outcome, payload, **address)
