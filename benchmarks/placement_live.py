"""How long the live scheduler's ``plan()`` takes.

Run from the repository root::

    python -m benchmarks.placement_live [--repeat N] [--time-limit S]

Two cases: one job onto a 100-device cluster (the interactive ``sdk.run`` path) and a
batch of 1,000 jobs onto 10,000 devices (a busy round). The cluster mixes cloud GPUs
(some sliced), edge GPUs/NPUs and device CPUs across sites joined by a network; jobs
vary in size, origin, model and priority. Everything is seeded, so runs compare.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from anypu.devices import Device
from anypu.placement import (
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    Plan,
    build_network,
    plan,
)

GiB = 2**30

# (tier, kind, model, memory GiB, tflops, slices) — a few shapes repeat, as in a real fleet.
_SHAPES = (
    ("cloud", "gpu", "H100", 80, 400.0, 1),
    ("cloud", "gpu", "A100", 40, 156.0, 4),
    ("edge", "gpu", "L4", 24, 60.0, 2),
    ("edge", "npu", "Ascend310", 8, 22.0, 1),
    ("device", "cpu", "arm64", 8, 0.2, 1),
)


def network(n_edge: int, n_device: int) -> object:
    sites = ["cloud"] + [f"edge{i}" for i in range(n_edge)] + [f"dev{i}" for i in range(n_device)]
    links = [
        {"a": f"edge{i}", "b": "cloud", "latency_ms": 20 + i % 7, "bandwidth_mbps": 1000}
        for i in range(n_edge)
    ] + [
        {"a": f"dev{i}", "b": f"edge{i % n_edge}", "latency_ms": 5, "bandwidth_mbps": 100}
        for i in range(n_device)
    ]
    return build_network({"sites": sites, "links": links})


def cluster(n_devices: int, seed: int) -> ClusterSnapshot:
    """About ``n_devices`` devices on nodes of up to 8, over 1 cloud, edge and device sites."""
    rng = np.random.default_rng(seed)
    n_edge, n_device = max(1, n_devices // 400), max(1, n_devices // 100)
    nodes: list[NodeView] = []
    made = 0
    while made < n_devices:
        tier, kind, model, mem, tflops, slices = _SHAPES[int(rng.integers(len(_SHAPES)))]
        count = min(n_devices - made, 8 if tier == "cloud" else 1 if tier == "device" else 2)
        site = {
            "cloud": "cloud",
            "edge": f"edge{rng.integers(n_edge)}",
            "device": f"dev{rng.integers(n_device)}",
        }[tier]
        node_id = f"n{len(nodes)}"
        devices = tuple(
            DeviceView(
                node_id,
                Device(f"{kind}{i}", kind, "bench", model, mem * GiB, tflops, "cpu", slices=slices),
                # Most slices idle, some with queued work: both classes and queues matter.
                tuple(
                    float(rng.choice([0.0, 0.0, 0.0, rng.uniform(0.1, 5)])) for _ in range(slices)
                ),
            )
            for i in range(count)
        )
        warm = frozenset(f"m{k}" for k in rng.choice(50, size=3, replace=False))
        nodes.append(NodeView(node_id, tier, site, bool(rng.random() > 0.01), {}, devices, warm))
        made += count
    return ClusterSnapshot(tuple(nodes), network(n_edge, n_device))


def jobs(n: int, n_device_sites: int, seed: int) -> list[JobRequest]:
    rng = np.random.default_rng(seed)
    return [
        JobRequest(
            job_id=f"j{i}",
            artifact_digest=f"m{rng.integers(50)}",
            flops=float(10 ** rng.uniform(8, 14)),
            memory_bytes=int(10 ** rng.uniform(6, 10.5)),
            input_bytes=int(10 ** rng.uniform(3, 7)),
            output_bytes=int(10 ** rng.uniform(2, 5)),
            artifact_bytes=int(10 ** rng.uniform(6, 9)),
            origin=f"dev{rng.integers(n_device_sites)}",
            priority=int(rng.choice([0, 0, 0, 1, 2])),
        )
        for i in range(n)
    ]


def measure(fn: Callable[[], Plan], repeat: int) -> tuple[list[float], Plan]:
    fn()  # warm caches and imports: the scheduler calls plan() for ever
    times, last = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        last = fn()
        times.append(time.perf_counter() - t0)
    assert last is not None
    return times, last


def report(name: str, times: list[float], result: Plan) -> None:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"{name:<34} median {statistics.median(times) * 1e3:9.3f} ms   "
        f"p99 {p99 * 1e3:9.3f} ms   n={len(times)}   solver={result.solver}   "
        f"placed={len(result.placements)} unschedulable={len(result.unschedulable)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="runs of the 1-job case")
    parser.add_argument("--batch-repeat", type=int, default=5, help="runs of the batch case")
    parser.add_argument("--time-limit", type=float, default=0.2, help="CP-SAT limit, seconds")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or platform.system()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}"
    )
    config = PlacementConfig(time_limit_s=args.time_limit)

    small = cluster(100, seed=1)
    one = jobs(1, 1, seed=2)
    times, result = measure(lambda: plan(small, one, config=config), args.repeat)
    report("1 job / 100 devices", times, result)

    big = cluster(10_000, seed=3)
    # A round of one job on a big cluster: mostly reading the snapshot, once its layout
    # (nodes, devices, slices) is known from the rounds before.
    times, result = measure(lambda: plan(big, one, config=config), args.repeat // 4)
    report("1 job / 10,000 devices", times, result)
    batch = jobs(1_000, 100, seed=4)
    times, result = measure(lambda: plan(big, batch, config=config), args.batch_repeat)
    report("1,000 jobs / 10,000 devices", times, result)
    greedy_cfg = PlacementConfig(use_cpsat=False)
    g_times, g_result = measure(lambda: plan(big, batch, config=greedy_cfg), args.batch_repeat)
    report("  same, greedy only", g_times, g_result)
    print(f"  objective cp-sat path {result.objective:.3f} s, greedy {g_result.objective:.3f} s")


if __name__ == "__main__":
    main()
