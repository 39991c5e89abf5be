"""What the network measurement gets right and what it costs, on links shaped by a proxy.

``python -m benchmarks.network [--quick]``. A real scheduler on loopback; each agent
reaches it through a TCP proxy (``tests/proxy.py``) that adds a one-way delay and caps
the bandwidth, as a link of that latency and capacity would. For each link:

- **latency**: the round trip the agent measures on its stream (heartbeat echoes, one a
  second here) against twice the imposed delay: median and 95th percentile over the
  last 64 samples the scheduler keeps, and the median's error;
- **bandwidth**: the agent's probes (one a second, ``--probe-share 0.25`` so a probe can
  fill the link long enough to time) against the imposed capacity: median and p99 of
  the readings after the first two (which are small by design), and the median's error;
- **cost** with the defaults an agent runs with (a probe every 30 s, within 64 MiB an
  hour and 1 % of the link): bytes the scheduler received as probes per second of the
  run, as a share of the link's capacity, and the agent's CPU (user + system seconds per
  second of wall time, from ``/proc``) against an agent with probes switched off.

Then, for each link's delay and capacity:

- **client**: a client that names no origin reaches the scheduler through the proxy; the
  round trip it times (``Transport.round_trips``: least of three empty calls) against
  twice the delay, and the origin the scheduler infers from it on a network that
  declares a vertex that far away;
- **between sites**: agent ``a-1`` times agent ``b-1``, whose direct address is behind
  the proxy (``--direct-advertise``): the round trip and bandwidth it reports
  (``NodeInfo.peers``, probes every second with ``--probe-share 0.25``), median of the
  samples after the first two, against the imposed link.

The target is an error of at most 20 % and a cost of at most 1 % of the link and 1 % of
a CPU. Nothing else is compared: no open scheduler measures the network it places over.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from anypu.sdk import Client
from anypu.sdk._transport import GrpcTransport
from benchmarks import machine, percentile
from tests.cluster import Cluster
from tests.proxy import Proxy

CPU_NODE = (
    "devices:\n"
    "  - {kind: cpu, vendor: intel, model: Xeon, memory: 4GiB, tflops: 0.5}\n"
    "include_host: false\n"
)
#: Vertices as far from the scheduler as each link's delay (one way), where a client
#: timed through that link should be placed; the agents' sites hang off the scheduler
#: with no latency declared, so their fit moves nothing the clients are judged on.
NETWORK = """\
sites: [scheduler, near, mid, far, a, b]
links:
  - {a: near, b: scheduler, latency_ms: 5, bandwidth_mbps: 32}
  - {a: mid, b: scheduler, latency_ms: 20, bandwidth_mbps: 100}
  - {a: far, b: scheduler, latency_ms: 50, bandwidth_mbps: 10}
  - {a: a, b: scheduler, latency_ms: 1, bandwidth_mbps: 1000}
  - {a: b, b: scheduler, latency_ms: 1, bandwidth_mbps: 1000}
"""
#: (one-way delay s, capacity bytes/s)
LINKS = ((0.005, 4e6), (0.020, 12.5e6), (0.050, 1.25e6))
PROBING = ("--probe-interval", "1", "--probe-budget", "100000", "--probe-share", "0.25")


def _node(client: Client, name: str):  # type: ignore[no-untyped-def]
    return next((n for n in client.transport.list_nodes() if n.node_id == name), None)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure_link(
    cluster: Cluster, client: Client, delay: float, bandwidth: float, seconds: float
) -> dict[str, float]:
    proxy = Proxy(cluster.port)
    proxy.shape(delay_s=delay, bandwidth_bps=bandwidth)
    name = f"link-{int(delay * 1000)}ms"
    readings: list[float] = []
    rtts: list[float] = []
    try:
        cluster.add_agent(name, "edge", CPU_NODE, address=proxy.address, extra=PROBING)
        started = time.monotonic()
        while time.monotonic() - started < seconds + 30:
            info = _node(client, name)
            if info is not None and info.bandwidth_age_s >= 0:
                if not readings or info.bandwidth_bps != readings[-1]:
                    readings.append(info.bandwidth_bps)
            if info is not None and info.rtt_age_s >= 0:
                rtts = [info.rtt_p50_s, info.rtt_p95_s]  # over the scheduler's last 64
            if len(readings) >= 2 + seconds and time.monotonic() - started > seconds:
                break
            time.sleep(0.25)
    finally:
        cluster.stop(name)
        proxy.close()
    kept = readings[2:] or readings
    imposed_rtt = 2 * delay
    return {
        "rtt_p50": rtts[0] if rtts else float("nan"),
        "rtt_p95": rtts[1] if rtts else float("nan"),
        "rtt_error": (rtts[0] - imposed_rtt) / imposed_rtt if rtts else 1.0,
        "bw_p50": statistics.median(kept) if kept else float("nan"),
        "bw_p99": percentile(kept, 0.99) if kept else float("nan"),
        "bw_error": (statistics.median(kept) - bandwidth) / bandwidth if kept else 1.0,
        "probes": float(len(readings)),
    }


def _measure_client(cluster: Cluster, delay: float, bandwidth: float) -> tuple[float, str]:
    """(round trip a client behind the shaped proxy times, the origin inferred for it)."""
    proxy = Proxy(cluster.port)
    proxy.shape(delay_s=delay, bandwidth_bps=bandwidth)
    far = Client(GrpcTransport(proxy.address, cluster.token))
    try:
        from anypu.sdk.models import mlp

        future = far.submit(mlp(), __import__("torch").randn(2, 256))
        future.result(timeout=60)
        rtt = dict(far._round_trips or ()).get("scheduler", float("nan"))
        return rtt, future.info().origin
    finally:
        far.close()
        proxy.close()


def _measure_between_sites(
    cluster: Cluster, client: Client, delay: float, bandwidth: float, seconds: float
) -> dict[str, float]:
    """a-1 timing b-1 through the shaped proxy in front of b-1's direct port."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    proxy = Proxy(port)
    proxy.shape(delay_s=delay, bandwidth_bps=bandwidth)
    rtts: list[float] = []
    readings: list[float] = []
    direct = ("--direct-address", f"127.0.0.1:{port}", "--direct-advertise", proxy.address)
    try:
        cluster.add_agent("b-1", "edge", CPU_NODE, site="b", extra=direct)
        cluster.add_agent("a-1", "edge", CPU_NODE, site="a", direct=True, extra=PROBING)
        started = time.monotonic()
        while time.monotonic() - started < seconds + 30:
            info = _node(client, "a-1")
            sample = next((p for p in info.peers if p.site == "b"), None) if info else None
            if sample is not None and (not rtts or sample.rtt_s != rtts[-1]):
                rtts.append(sample.rtt_s)
                if sample.bandwidth_bps and (not readings or sample.bandwidth_bps != readings[-1]):
                    readings.append(sample.bandwidth_bps)
            if len(readings) >= 2 + seconds and time.monotonic() - started > seconds:
                break
            time.sleep(0.25)
    finally:
        cluster.stop("a-1")
        cluster.stop("b-1")
        proxy.close()
    kept, trips = readings[2:] or readings, rtts[2:] or rtts
    rtt = statistics.median(trips) if trips else float("nan")
    bw = statistics.median(kept) if kept else float("nan")
    return {
        "rtt": rtt,
        "rtt_error": (rtt - 2 * delay) / (2 * delay),
        "bw": bw,
        "bw_error": (bw - bandwidth) / bandwidth,
        "samples": float(len(rtts)),
    }


def _cost(cluster: Cluster, client: Client, seconds: float) -> tuple[float, float, float]:
    """(probe bytes/s with the defaults, agent CPU with them, agent CPU without)."""
    before = _probe_bytes(cluster)
    cpu: dict[str, float] = {}
    for name, extra in (
        ("default", ("--probe-interval", "4")),
        ("off", ("--no-bandwidth-probes",)),
    ):
        # 4 s instead of 30 so a short run sees probes (the least interval at which the
        # default budget pays for the smallest probe); budget and share as shipped
        cluster.add_agent(name, "edge", CPU_NODE, extra=extra)
        deadline = time.monotonic() + 60
        while _node(client, name) is None or _node(client, name).state != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent {name} did not join")
            time.sleep(0.2)
        time.sleep(5)  # past start-up (torch import, self-test)
        pid = cluster.procs[name].pid
        t0, c0 = time.monotonic(), _cpu_seconds(pid)
        time.sleep(seconds)
        cpu[name] = (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        if name == "default":
            sent = (_probe_bytes(cluster) - before) / (time.monotonic() - t0 + 5)
        cluster.stop(name)
    return sent, cpu["default"], cpu["off"]


def _probe_bytes(cluster: Cluster) -> float:
    return _metric(cluster, "anypu_probe_bytes_total")


def _metric(cluster: Cluster, name: str) -> float:
    import re
    import urllib.request

    match = re.search(r"dashboard on (http://\S+)", cluster.log("scheduler"))
    assert match, "the scheduler printed no dashboard URL"
    request = urllib.request.Request(match.group(1).rstrip("/") + "/metrics")
    request.add_header("Authorization", f"Bearer {cluster.token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args()
    seconds = 6.0 if args.quick else 15.0
    print(machine())
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "network.yaml").write_text(NETWORK)
        cluster = Cluster(Path(work), network=Path(work) / "network.yaml", **{"http-port": 0})
        client = Client(GrpcTransport(cluster.address, cluster.token))
        try:
            print(
                "| link (one-way delay, capacity) | rtt imposed | rtt p50 | rtt p95 | error |"
                " bandwidth p50 | p99 | error | probes |"
            )
            print("|---|---|---|---|---|---|---|---|---|")
            for delay, bandwidth in LINKS:
                r = _measure_link(cluster, client, delay, bandwidth, seconds)
                print(
                    f"| {delay * 1e3:.0f} ms, {bandwidth * 8 / 1e6:.0f} Mbit/s |"
                    f" {2 * delay * 1e3:.0f} ms | {r['rtt_p50'] * 1e3:.1f} ms |"
                    f" {r['rtt_p95'] * 1e3:.1f} ms | {r['rtt_error']:+.1%} |"
                    f" {r['bw_p50'] * 8 / 1e6:.1f} Mbit/s | {r['bw_p99'] * 8 / 1e6:.1f} |"
                    f" {r['bw_error']:+.1%} | {r['probes']:.0f} |",
                    flush=True,
                )
            print(
                "\n| client link (one-way delay, capacity) | rtt imposed | rtt timed | error |"
                " origin inferred |"
            )
            print("|---|---|---|---|---|")
            cluster.add_agent("runner", "edge", CPU_NODE)  # runs the clients' calls
            cluster.wait_nodes(client, 1)
            for delay, bandwidth in LINKS:
                rtt, origin = _measure_client(cluster, delay, bandwidth)
                print(
                    f"| {delay * 1e3:.0f} ms, {bandwidth * 8 / 1e6:.0f} Mbit/s |"
                    f" {2 * delay * 1e3:.0f} ms | {rtt * 1e3:.1f} ms |"
                    f" {(rtt - 2 * delay) / (2 * delay):+.1%} | {origin} |",
                    flush=True,
                )
            cluster.stop("runner")
            print(
                "\n| a-b link (one-way delay, capacity) | rtt imposed | rtt p50 | error |"
                " bandwidth p50 | error | samples |"
            )
            print("|---|---|---|---|---|---|---|")
            for delay, bandwidth in LINKS:
                r = _measure_between_sites(cluster, client, delay, bandwidth, seconds)
                print(
                    f"| {delay * 1e3:.0f} ms, {bandwidth * 8 / 1e6:.0f} Mbit/s |"
                    f" {2 * delay * 1e3:.0f} ms | {r['rtt'] * 1e3:.1f} ms |"
                    f" {r['rtt_error']:+.1%} | {r['bw'] * 8 / 1e6:.1f} Mbit/s |"
                    f" {r['bw_error']:+.1%} | {r['samples']:.0f} |",
                    flush=True,
                )
            sent, cpu_on, cpu_off = _cost(cluster, client, seconds * 2)
            print(
                f"cost with the default budget (64 MiB/h = {(64 << 20) / 3600 / 1e3:.1f} kB/s,"
                f" 1 % of the link; a probe every 4 s here): {sent / 1e3:.1f} kB/s of probes"
                f" = {sent / 12.5e6:.3%} of a 100 Mbit/s link; agent CPU {cpu_on:.2%} with"
                f" probes, {cpu_off:.2%} without (heartbeats and echoes included in both)"
            )
        finally:
            client.close()
            cluster.close()


if __name__ == "__main__":
    main()
