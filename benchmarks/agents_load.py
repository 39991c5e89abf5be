"""Thousands of agents held by one scheduler: heartbeats, placement under load, a restart.

``python -m benchmarks.agents_load [--agents 1000] [--processes 4] [--client-port]``

The simulated agents join at the scheduler's agents' port (its event loop) unless
``--client-port`` (a thread pair per stream), and run on the same machine.

Lightweight simulated agents (asyncio gRPC clients, a few processes) open real streams
over loopback to a real scheduler process, join, and send heartbeats at 1 Hz with
jitter; they answer each Launch at once with a result, so what is measured is the
control plane. The run reports:

- heartbeat lag: the age of each node's last heartbeat as the scheduler sees it,
  sampled every second over all nodes (1 Hz heartbeats: ≈ 1 s means on time);
- false "lost": nodes the scheduler declared lost while their agent was alive (must be 0);
- placement latency: submit → result for jobs submitted while all agents heartbeat;
- re-join time: SIGKILL the scheduler, start it again on the same port and state,
  and time until every agent is ready again (target ≤ 10 s);
- round trips: one heartbeat in ``ECHO_EVERY`` asks for an echo, as real agents' do, and
  each reports the last one's round trip; the scheduler's per-node medians and 95th percentiles at the end of
  the steady phase. ``--no-echo`` runs the same without, to compare what echoes cost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import platform
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import percentile

HEARTBEAT_S = 1.0


def _agent_process(
    address: str, token: str, names: list[str], stop: object, echo: bool = True
) -> None:
    import grpc

    from anypu import PROTOCOL_VERSION
    from anypu.agents._state import ECHO_EVERY
    from anypu.devices import Device
    from anypu.protos import anypu_v1_pb2_grpc as rpc
    from anypu.protos import convert
    from anypu.protos import messages as m

    device = Device("gpu0", "gpu", "nvidia", "T4", 16 << 30, 8.1, "cpu", simulated=True)

    async def one(name: str) -> None:
        backoff = 0.1
        while not stop.is_set():  # type: ignore[attr-defined]
            outbox: asyncio.Queue = asyncio.Queue()
            join = m.Join(PROTOCOL_VERSION, token, name, "edge", devices=(device,))
            await outbox.put(convert.agent_message_to_pb(join))

            class Requests:  # a plain async iterator: cancelling it leaves nothing behind
                def __aiter__(self):
                    return self

                async def __anext__(self, outbox: asyncio.Queue = outbox):
                    return await outbox.get()

            rtt = [0.0]  # the last echo's round trip

            async def beat(outbox: asyncio.Queue = outbox, rtt: list[float] = rtt) -> None:
                await asyncio.sleep(random.random() * HEARTBEAT_S)
                for beat in itertools.count():
                    asks = echo and beat % ECHO_EVERY == 0
                    message = m.Heartbeat(sent_at=time.time(), rtt_s=rtt[0], wants_echo=asks)
                    await outbox.put(convert.agent_message_to_pb(message))
                    await asyncio.sleep(HEARTBEAT_S * (0.9 + 0.2 * random.random()))

            beating = None
            try:
                async with grpc.aio.insecure_channel(address) as channel:
                    call = rpc.AgentServiceStub(channel).Connect(Requests())
                    async for reply in call:
                        message = convert.scheduler_message_from_pb(reply)
                        if isinstance(message, m.JoinAck):
                            backoff = 0.1
                            beating = beating or asyncio.ensure_future(beat())
                        elif isinstance(message, m.HeartbeatEcho):
                            rtt[0] = max(0.0, time.time() - message.sent_at)
                        elif isinstance(message, m.Launch):
                            result = m.JobResult(message.job_id, message.attempt, outputs=b"")
                            await outbox.put(convert.agent_message_to_pb(result))
            except grpc.aio.AioRpcError:
                pass
            finally:
                if beating is not None:
                    beating.cancel()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)

    async def main() -> None:
        tasks = [asyncio.ensure_future(one(n)) for n in names]
        while not stop.is_set():  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="steady-state phase")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--no-echo", action="store_true", help="heartbeats ask for no echo")
    parser.add_argument("--join-timeout", type=float, default=180.0, help="seconds")
    parser.add_argument(
        "--client-port",
        action="store_true",
        help="agents join at the client port (a thread pair per stream), not the agents' port",
    )
    args = parser.parse_args()

    from anypu.protos import messages as m
    from anypu.sdk._transport import GrpcTransport
    from tests.cluster import Cluster

    work = Path(tempfile.mkdtemp(prefix="anypu-load-"))
    cluster = Cluster(work, **{"heartbeat-interval": HEARTBEAT_S, "lost-after": 5 * HEARTBEAT_S})
    stop = multiprocessing.Event()
    names = [f"sim-{i:04d}" for i in range(args.agents)]
    shares = [names[i :: args.processes] for i in range(args.processes)]
    procs = [
        multiprocessing.Process(
            target=_agent_process,
            args=(
                cluster.address if args.client_port else cluster.agents_address,
                cluster.token,
                s,
                stop,
                not args.no_echo,
            ),
        )
        for s in shares
    ]
    # Listing every node costs the scheduler too: thousands of them, less often.
    poll_s = max(0.1, args.agents / 5000)
    started = time.monotonic()
    for proc in procs:
        proc.start()
    transport = GrpcTransport(cluster.address, cluster.token)
    try:
        while sum(n.state == "ready" for n in transport.list_nodes()) < args.agents:
            if time.monotonic() - started > args.join_timeout:
                raise SystemExit(f"agents did not all join within {args.join_timeout:g} s")
            time.sleep(poll_s)
        join_seconds = time.monotonic() - started
        digest = "0" * 64
        import hashlib

        blob = b"load-test artifact"
        digest = hashlib.sha256(blob).hexdigest()
        transport.put_blob(digest, blob)

        ages: list[float] = []
        lost_seen: set[str] = set()
        measured: list = []
        latencies: list[float] = []
        done = threading.Event()

        def submitter() -> None:
            request = m.SubmitRequest(artifact_digest=digest, inputs=b"x", flops=1e9, wait=True)
            interval = args.seconds / max(1, args.jobs)
            for _ in range(args.jobs):
                t = time.perf_counter()
                info, _ = transport.submit(request)
                if info.state == "succeeded":
                    latencies.append(time.perf_counter() - t)
                time.sleep(max(0.0, interval - (time.perf_counter() - t)))
            done.set()

        thread = threading.Thread(target=submitter, daemon=True)
        scheduler_pid = cluster.procs["scheduler"].pid
        cpu_before, steady_from = _cpu_seconds(scheduler_pid), time.monotonic()
        lost_before = cluster.log("scheduler").count(" lost: no heartbeat")
        thread.start()
        steady_until = time.monotonic() + args.seconds
        while time.monotonic() < steady_until or not done.is_set():
            nodes = transport.list_nodes()
            ages += [n.last_heartbeat_age_s for n in nodes]
            lost_seen |= {n.node_id for n in nodes if n.state != "ready"}
            measured = [n for n in nodes if n.rtt_age_s >= 0]
            time.sleep(1.0)
        thread.join()
        cpu = (_cpu_seconds(scheduler_pid) - cpu_before) / (time.monotonic() - steady_from)
        rss = _rss_bytes(scheduler_pid)
        lost_logged = cluster.log("scheduler").count(" lost: no heartbeat") - lost_before

        cluster.restart_scheduler()
        restarted = time.monotonic()
        ready = 0
        while time.monotonic() - restarted < args.join_timeout:
            try:
                ready = sum(n.state == "ready" for n in transport.list_nodes())
            except Exception:
                ready = 0
            if ready >= args.agents:
                break
            time.sleep(poll_s)
        rejoin_seconds = time.monotonic() - restarted
    finally:
        stop.set()
        for proc in procs:
            proc.join(10)
        transport.close()
        cluster.close()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(
        f"{args.agents} simulated agents in {args.processes} processes, heartbeat {HEARTBEAT_S:g} s"
    )
    print(f"all joined in {join_seconds:.1f} s")
    print(
        f"heartbeat age seen by the scheduler: median {statistics.median(ages):.3f} s,"
        f" p99 {percentile(ages, 0.99):.3f} s, max {max(ages):.3f} s ({len(ages)} samples)"
    )
    print(f"nodes seen not ready during the steady phase: {len(lost_seen)} (must be 0)")
    print(f"nodes the scheduler declared lost during the steady phase: {lost_logged}")
    print(
        f"scheduler during the steady phase: {cpu:.2f} CPU cores,"
        f" resident {rss / 2**20:.0f} MiB at its end"
    )
    if latencies:
        print(
            f"placement + dispatch + result, {len(latencies)} jobs: median"
            f" {statistics.median(latencies) * 1e3:.2f} ms, p99 {percentile(latencies, 0.99) * 1e3:.2f} ms"
        )
    if measured:
        medians = [n.rtt_p50_s for n in measured]
        p95s = [n.rtt_p95_s for n in measured]
        print(
            f"round trip on the streams, {len(measured)} nodes: their medians' median"
            f" {statistics.median(medians) * 1e3:.2f} ms, their p95s' p99"
            f" {percentile(p95s, 0.99) * 1e3:.2f} ms"
        )
    else:
        print("round trip on the streams: not measured (--no-echo)")
    print(
        f"after a scheduler SIGKILL + restart: {ready}/{args.agents} re-joined in {rejoin_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
