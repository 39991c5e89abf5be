"""A worker's direct-call data plane: frames on TCP (``agents._direct.FrameServer``)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from anypu.agents._direct import FrameServer
from anypu.comm import (
    FRAME_VERSION,
    FrameError,
    read_frame,
    result_from_frame,
    result_to_frame,
    write_frame,
)
from anypu.protos import messages as m
from tests.builders import failed, ran


def run_leased(lease_id: str, inputs: bytes):
    if lease_id != "lease-ok":
        return None, ""
    if inputs == b"boom":
        raise RuntimeError("agent bug")
    return m.JobResult("job-1", 1, ran(run_seconds=0.5), inputs[::-1], node_id="n"), ""


@pytest.fixture
def server():
    server = FrameServer(run_leased, "127.0.0.1")
    yield server
    server.stop()


def connect(server: FrameServer) -> socket.socket:
    host, _, port = server.address.rpartition(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    connection.settimeout(None)  # frames are read from the descriptor, which must block
    # ... but not forever, should the server never answer: the test fails instead.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
    return connection


def call(connection: socket.socket, lease_id: str, inputs: bytes):
    write_frame(connection.fileno(), {"lease_id": lease_id}, inputs)
    return result_from_frame(*read_frame(connection.fileno(), 1 << 20))


def test_calls_under_a_held_lease_answer_on_one_connection(server):
    with connect(server) as connection:
        for payload in (b"abc", b"xyz"):
            result = call(connection, "lease-ok", payload)
            assert result.ok and result.outputs == payload[::-1] and result.node_id == "n"
            assert result.outcome.run_seconds == 0.5


def test_an_unknown_lease_is_lost_and_the_server_s_own_failure_is_an_error(server):
    with connect(server) as connection:
        assert call(connection, "lease-forged", b"abc") is None
        with pytest.raises(ConnectionError, match="agent bug"):
            call(connection, "lease-ok", b"boom")
        assert call(connection, "lease-ok", b"ok").ok  # still serving this connection


def head(header: int, payload: int, version: int = FRAME_VERSION, magic: bytes = b"AP") -> bytes:
    return struct.pack("<2sHIQ", magic, version, header, payload)


@pytest.mark.parametrize(
    "garbage",
    [
        head(3, 0) + b"[1]",  # a header that is not an object
        head(2, 1 << 40) + b"{}",  # a payload far over the limit
        head(5, 0) + b"nope!",  # not JSON
        head(2, 0, version=FRAME_VERSION + 1) + b"{}",  # a release that speaks another version
        head(2, 0, magic=b"GE") + b"{}",  # another protocol (e.g. an HTTP client)
    ],
)
def test_a_malformed_frame_drops_that_connection_only(server, garbage):
    with connect(server) as bad:
        bad.sendall(garbage)
        try:
            assert bad.recv(1) == b""  # closed by the server...
        except ConnectionResetError:
            pass  # ... with our bytes unread, which TCP reports as a reset
    with connect(server) as good:
        assert call(good, "lease-ok", b"abc").ok


def test_results_round_trip_through_frames():
    result = m.JobResult("j", 1, failed(traceback="tb"), b"", "n", "d")
    assert result_from_frame(*result_to_frame(result)) == result
    assert result_from_frame(*result_to_frame(None)) is None


def test_a_frame_of_another_version_is_refused_naming_both():
    read_end, write_end = os.pipe()
    try:
        write_frame(write_end, {"ok": 1}, b"x")
        assert read_frame(read_end) == ({"ok": 1}, b"x")
        os.write(write_end, head(2, 0, version=FRAME_VERSION + 1) + b"{}")
        match = f"frame version {FRAME_VERSION + 1}, this side speaks {FRAME_VERSION}"
        with pytest.raises(FrameError, match=match):
            read_frame(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
