"""How full the live scheduler's placement policies pack a sliced GPU cluster.

Run from the repository root::

    python -m benchmarks.placement_quality_live [--nodes 40] [--seeds 42-46]

The openb protocol (issue 3), but through the live scheduler's own ``plan()`` rather than
the trace model: a cloud of 8-GPU nodes (40 GiB accelerators, each cut into 1, 2, 4 or 7
slices, as MIG cuts an A100), and jobs that need 3, 8, 18 or 36 GiB arriving one at a
time in a seeded order. Each arrival is planned alone with
``plan(snapshot, [job], PlacementConfig(policy=…))``; a placed job keeps its slice for
good (as pods never depart there); a job that would have to wait — held back by a policy,
or queued behind a busy slice by ``cost`` — is dropped. The figure is the memory the
placed jobs use, as a share of the cluster's accelerator memory, when the memory the
arrivals asked for reaches 100 % of it (and 130 %), like openb's allocation ratio; also
how much of the cluster the occupied slices hold (what a job's slice keeps from others).
The typical workload that ``fgd``/``anypu`` plan for is the scheduler's: the slices the
last placements took (``ClusterSnapshot.workload``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import numpy as np
from anypu.devices import Device
from anypu.placement import (
    POLICY_NAMES,
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    plan,
    workload_shape,
)

GiB = 2**30
DEVICE_MEMORY = 40 * GiB
SLICINGS = (1, 2, 4, 7)
JOB_GIB = (3, 8, 18, 36)  # fit slices of 5.7 (7-way), 10 (4-way), 20 (2-way), 40 GiB
JOB_MIX = (0.4, 0.3, 0.2, 0.1)


def build_cluster(n_nodes: int, rng: np.random.Generator) -> ClusterSnapshot:
    nodes = []
    for n in range(n_nodes):
        node_id = f"n{n}"
        devices = tuple(
            DeviceView(
                node_id,
                Device(f"gpu{i}", "gpu", "bench", "A100", DEVICE_MEMORY, 156.0, "cpu", slices=s),
                (0.0,) * s,
            )
            for i, s in enumerate(rng.choice(SLICINGS, size=8))
        )
        nodes.append(NodeView(node_id, "cloud", "dc", True, {}, devices))
    return ClusterSnapshot(tuple(nodes))


def arrivals(count: int, rng: np.random.Generator) -> list[int]:
    return [int(g) * GiB for g in rng.choice(JOB_GIB, size=count, p=JOB_MIX)]


def replay(policy: str, n_nodes: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    snapshot = build_cluster(n_nodes, rng)
    capacity = n_nodes * 8 * DEVICE_MEMORY
    jobs = arrivals(int(1.3 * capacity / (np.dot(JOB_GIB, JOB_MIX) * GiB)) + 50, rng)
    config = PlacementConfig(policy=policy, time_limit_s=0.05, seed=seed)
    busy = {
        (v.node_id, v.device.device_id): list(v.slice_busy_seconds)
        for n in snapshot.nodes
        for v in n.devices
    }
    devices = {(v.node_id, v.device.device_id): v.device for n in snapshot.nodes for v in n.devices}
    workload: list = []
    arrived = used = held = 0.0
    figures: dict[str, float] = {}
    decisions: list[float] = []
    for k, memory in enumerate(jobs):
        job = JobRequest(
            f"j{k}",
            "model",
            1e9,
            memory,
            1 << 20,
            1 << 20,
            device_kinds=frozenset({"gpu"}),
            measured_seconds={},
        )
        nodes = tuple(
            dataclasses.replace(
                node,
                devices=tuple(
                    dataclasses.replace(
                        v, slice_busy_seconds=tuple(busy[(v.node_id, v.device.device_id)])
                    )
                    for v in node.devices
                ),
            )
            for node in snapshot.nodes
        )
        started = time.perf_counter()
        result = plan(
            ClusterSnapshot(nodes, workload=tuple(workload[-1000:])), [job], config=config
        )
        decisions.append(time.perf_counter() - started)
        arrived += memory
        for p in result.placements:
            slices = busy[(p.node_id, p.device_id)]
            if slices[p.slice_index] == 0.0:  # a free slice: the job holds it for good
                slices[p.slice_index] = 1.0
                device = devices[(p.node_id, p.device_id)]
                used += memory
                held += device.slice_memory_bytes
                workload.append(workload_shape(device))
        for level in (1.0, 1.3):
            key = f"{level:.0%}"
            if key not in figures and arrived >= level * capacity:
                figures[f"used@{key}"] = 100 * used / capacity
                figures[f"held@{key}"] = 100 * held / capacity
    ordered = sorted(decisions)
    figures["decision_ms_median"] = 1e3 * statistics.median(ordered)
    figures["decision_ms_p99"] = 1e3 * ordered[int(0.99 * (len(ordered) - 1))]
    return figures


def _mean_sd(runs: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in runs]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--seeds", default="42-46")
    parser.add_argument("--policies", default=",".join(POLICY_NAMES))
    args = parser.parse_args()
    first, _, last = args.seeds.partition("-")
    seeds = range(int(first), int(last or first) + 1)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.nodes} nodes × 8 GPUs"
        f" of 40 GiB sliced {SLICINGS}; jobs {JOB_GIB} GiB with mix {JOB_MIX}; seeds {args.seeds}"
    )
    print(
        f"{'policy':<11}{'used@100%':>14}{'used@130%':>14}{'held@100%':>14}{'decision p99 ms':>17}"
    )
    for policy in args.policies.split(","):
        runs = [replay(policy, args.nodes, seed) for seed in seeds]

        p99 = max(r["decision_ms_p99"] for r in runs)
        print(
            f"{policy:<11}{_mean_sd(runs, 'used@100%'):>14}{_mean_sd(runs, 'used@130%'):>14}{_mean_sd(runs, 'held@100%'):>14}{p99:>17.2f}"
        )


if __name__ == "__main__":
    main()
