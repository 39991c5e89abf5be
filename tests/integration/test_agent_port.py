"""The agents' port: agents' streams held by the scheduler's event loop, not a thread
each (``scheduler/_agent_port.py``). A real agent joins there and runs a job; hundreds
of raw streams join without the scheduler's threads growing; a stream's mistakes get
the same answers as on the client port."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import grpc
import pytest
import torch

from anypu import PROTOCOL_VERSION
from anypu.devices import Device
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m
from anypu.sdk import Client
from anypu.sdk._transport import GrpcTransport
from anypu.sdk.models import mlp
from tests.cluster import SIMULATED_CPU, Cluster

STREAMS = 300
DEVICE = Device("gpu0", "gpu", "nvidia", "T4", 16 << 30, 8.1, "cpu", simulated=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("agent-port"))
    try:
        yield cluster
    finally:
        cluster.close()


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def test_an_agent_joins_at_the_agents_port_and_runs_a_job(cluster):
    cluster.add_agent("loop-1", "edge", SIMULATED_CPU, address=cluster.agents_address)
    model, x = mlp(), torch.randn(4, 256)
    client = Client(GrpcTransport(cluster.address, cluster.token))
    try:
        cluster.wait_nodes(client, 1)
        out = client.run(model, x)
    finally:
        client.close()
    torch.testing.assert_close(out, model.eval()(x))
    assert "agents' port" in cluster.log("scheduler")


async def _hold(address: str, token: str, names: list[str], joined: asyncio.Event) -> list:
    """Open a stream per name, join, and keep them open until ``joined`` is set."""
    acks: list = []
    refused: list = []

    async def one(name: str) -> None:
        channel = grpc.aio.insecure_channel(address)
        join = m.Join(PROTOCOL_VERSION, token, name, "edge", devices=(DEVICE,))
        sent = asyncio.Event()

        async def requests():
            yield convert.agent_message_to_pb(join)
            await sent.wait()

        for attempt in range(50):
            call = rpc.AgentServiceStub(channel).Connect(requests())
            try:
                async for reply in call:
                    if isinstance(convert.scheduler_message_from_pb(reply), m.JoinAck):
                        acks.append(name)
                        break
                break
            except grpc.aio.AioRpcError as error:
                # Admission: too many Joins waiting; come back later, as agents do.
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                refused.append(name)
                await asyncio.sleep(0.05 * (1 + attempt) * (0.5 + random.random()))
        await joined.wait()
        call.cancel()
        await channel.close()

    tasks = [asyncio.ensure_future(one(n)) for n in names]
    while len(acks) < len(names) and not all(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    return [tasks, acks]


def test_hundreds_of_streams_hold_no_thread_each(cluster):
    pid = cluster.procs["scheduler"].pid
    before = _threads(pid)

    async def run() -> tuple[int, int]:
        joined = asyncio.Event()
        names = [f"raw-{i:03d}" for i in range(STREAMS)]
        tasks, acks = await _hold(cluster.agents_address, cluster.token, names, joined)
        during = _threads(pid)
        joined.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(acks), during

    acked, during = asyncio.run(run())
    assert acked == STREAMS
    # Each stream on the client port holds two threads (600 here); the loop holds none.
    assert during - before < 40, (before, during)
    transport = GrpcTransport(cluster.address, cluster.token)
    try:
        deadline = time.monotonic() + 30
        while any(
            n.node_id.startswith("raw-") and n.state == "ready" for n in transport.list_nodes()
        ):
            assert time.monotonic() < deadline, "the streams' ends were not seen"
            time.sleep(0.2)
    finally:
        transport.close()


@pytest.mark.parametrize(
    ("first", "code", "says"),
    [
        (m.Heartbeat(sent_at=1.0), grpc.StatusCode.INVALID_ARGUMENT, "must be a Join"),
        (
            m.Join(PROTOCOL_VERSION, "wrong-token", "bad-1", "edge", devices=(DEVICE,)),
            grpc.StatusCode.UNAUTHENTICATED,
            "token",
        ),
        (
            m.Join(PROTOCOL_VERSION, "test-token", "bad-2", "orbit", devices=(DEVICE,)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "tier",
        ),
    ],
)
def test_a_stream_s_mistakes_get_the_client_port_s_answers(cluster, first, code, says):
    answers = {}
    for address in (cluster.address, cluster.agents_address):
        with grpc.insecure_channel(address) as channel:
            call = rpc.AgentServiceStub(channel).Connect(iter([convert.agent_message_to_pb(first)]))
            with pytest.raises(grpc.RpcError) as raised:
                list(call)
        answers[address] = (raised.value.code(), raised.value.details())
    assert answers[cluster.address] == answers[cluster.agents_address]
    assert answers[cluster.address][0] == code and says in answers[cluster.address][1]


def test_an_undecodable_message_is_answered_invalid_argument(cluster):
    with grpc.insecure_channel(cluster.agents_address) as channel:
        connect = channel.stream_stream(
            "/anypu.v1.AgentService/Connect",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as raised:
            list(connect(iter([b"\xff\xff\xff not protobuf"])))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in raised.value.details()
