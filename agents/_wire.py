"""Framing between an agent and its worker processes: a JSON header and a byte payload.

No pickle crosses this boundary: the agent writes ``(header, payload)`` frames into a pipe
and the worker answers the same way, so a hostile model's bytes are only ever handed to
the safe artifact loader. Clients holding a lease send the worker the same frames over
TCP (``_direct.FrameServer``), or over TLS when the scheduler is deployed with it (an
``ssl.SSLSocket`` in place of the descriptor); a frame from such a peer is read with a size
limit.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

__all__ = ["read_frame", "write_frame"]

_HEAD = struct.Struct("<IQ")  # header length, payload length


#: A pipe or plain socket's descriptor (raw ``os`` calls: no buffering to get around), or
#: a socket object, which TLS needs.
Channel = int | socket.socket


def write_frame(fd: Channel, header: dict[str, Any], payload: bytes = b"") -> None:
    head = json.dumps(header).encode()
    data = b"".join((_HEAD.pack(len(head), len(payload)), head, payload))
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
            raise EOFError("the other end of the worker pipe closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


_MAX_HEADER = 1 << 20


def read_frame(fd: Channel, max_payload: int | None = None) -> tuple[dict[str, Any], bytes]:
    """The next frame; ``max_payload``: refuse a bigger one (a peer that is not trusted)."""
    head_len, payload_len = _HEAD.unpack(_read_exact(fd, _HEAD.size))
    if max_payload is not None and (head_len > _MAX_HEADER or payload_len > max_payload):
        raise ValueError(f"frame of {head_len} + {payload_len} bytes refused: too large")
    header = json.loads(_read_exact(fd, head_len))
    if not isinstance(header, dict):
        raise ValueError("a frame's header must be a JSON object")
    payload = _read_exact(fd, payload_len) if payload_len else b""
    return header, payload
