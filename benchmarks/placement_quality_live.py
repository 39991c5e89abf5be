"""How full the live scheduler's placement policies pack a sliced GPU cluster.

Run from the repository root::

    python -m benchmarks.placement_quality_live [--nodes 40] [--seeds 42-46]
        [--cluster a100|mixed] [--departures]

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
JOB_GIB = (3, 8, 18, 36)  # fit A100 slices of 5.7 (7-way), 10 (4-way), 20 (2-way), 40 GiB
JOB_MIX = (0.4, 0.3, 0.2, 0.1)


@dataclasses.dataclass(frozen=True)
class NodeKind:
    model: str
    memory_gib: int
    tflops: float
    gpus: int
    slicings: tuple[int, ...]  # how a GPU may be cut; each GPU draws one


#: Node mixes, each kind with its share of the nodes. ``mixed`` has GPUs of three sizes,
#: so a job's smallest fitting slice is on some models only.
CLUSTERS: dict[str, tuple[tuple[NodeKind, float], ...]] = {
    "a100": ((NodeKind("A100-40GB", 40, 156.0, 8, (1, 2, 4, 7)), 1.0),),
    "mixed": (
        (NodeKind("A100-40GB", 40, 156.0, 8, (1, 2, 4, 7)), 0.4),
        (NodeKind("A10-24GB", 24, 125.0, 4, (1, 2, 4)), 0.3),
        (NodeKind("T4-16GB", 16, 65.0, 4, (1, 2)), 0.3),
    ),
}


def build_cluster(n_nodes: int, rng: np.random.Generator, cluster: str = "a100") -> ClusterSnapshot:
    kinds = CLUSTERS[cluster]
    picks = rng.choice(len(kinds), size=n_nodes, p=[share for _, share in kinds])
    nodes = []
    for n, pick in enumerate(picks.tolist()):
        kind = kinds[pick][0]
        node_id = f"n{n}"
        devices = tuple(
            DeviceView(
                node_id,
                Device(
                    f"gpu{i}", "gpu", "bench", kind.model, kind.memory_gib * GiB, kind.tflops,
                    "cpu", slices=int(s),
                ),
                (0.0,) * int(s),
            )
            for i, s in enumerate(rng.choice(kind.slicings, size=kind.gpus))
        )  # fmt: skip
        nodes.append(NodeView(node_id, "cloud", "dc", True, {}, devices))
    return ClusterSnapshot(tuple(nodes))


def arrivals(count: int, rng: np.random.Generator) -> list[int]:
    return [int(g) * GiB for g in rng.choice(JOB_GIB, size=count, p=JOB_MIX)]


def replay(
    policy: str, n_nodes: int, seed: int, cluster: str = "a100", departures: bool = False
) -> dict[str, float]:
    """One replay. Without ``departures`` jobs never leave and the figures are taken at
    100 % and 130 % arrival. With them each job holds its slice for an exponentially
    distributed number of arrivals, of a mean ``L`` that makes the stream offer 1.3 × the
    cluster's memory, and the figures are steady-state means over arrivals ``L..4L``."""
    rng = np.random.default_rng(seed)
    snapshot = build_cluster(n_nodes, rng, cluster)
    capacity = sum(v.device.memory_bytes for n in snapshot.nodes for v in n.devices)
    mean_job = float(np.dot(JOB_GIB, JOB_MIX)) * GiB
    lifetime = max(1, round(1.3 * capacity / mean_job)) if departures else 0
    count = 4 * lifetime if departures else int(1.3 * capacity / mean_job) + 50
    jobs = arrivals(count, rng)
    stays = np.maximum(1, np.ceil(rng.exponential(lifetime or 1, size=count))).astype(int)
    config = PlacementConfig(policy=policy, time_limit_s=0.05, seed=seed)
    busy = {
        (v.node_id, v.device.device_id): list(v.slice_busy_seconds)
        for n in snapshot.nodes
        for v in n.devices
    }
    devices = {(v.node_id, v.device.device_id): v.device for n in snapshot.nodes for v in n.devices}
    workload: list = []
    leaving: dict[int, list[tuple[tuple[str, str], int, int, int]]] = {}
    arrived = used = held = 0.0
    figures: dict[str, float] = {}
    decisions: list[float] = []
    steady_used: list[float] = []
    steady_held: list[float] = []
    accepted = offered = 0
    for k, memory in enumerate(jobs):
        for key, index, job_memory, slice_memory in leaving.pop(k, []):
            busy[key][index] = 0.0
            used -= job_memory
            held -= slice_memory
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
        placed = False
        for p in result.placements:
            key = (p.node_id, p.device_id)
            slices = busy[key]
            if slices[p.slice_index] == 0.0:  # a free slice: the job holds it
                slices[p.slice_index] = 1.0
                device = devices[key]
                used += memory
                held += device.slice_memory_bytes
                workload.append(workload_shape(device))
                placed = True
                if lifetime:
                    leaving.setdefault(k + int(stays[k]), []).append(
                        (key, p.slice_index, memory, device.slice_memory_bytes)
                    )
        if lifetime and k >= lifetime:
            offered += 1
            accepted += placed
            steady_used.append(100 * used / capacity)
            steady_held.append(100 * held / capacity)
        if not lifetime:
            for level in (1.0, 1.3):
                label = f"{level:.0%}"
                if f"used@{label}" not in figures and arrived >= level * capacity:
                    figures[f"used@{label}"] = 100 * used / capacity
                    figures[f"held@{label}"] = 100 * held / capacity
    if lifetime:
        figures["used@steady"] = statistics.mean(steady_used)
        figures["held@steady"] = statistics.mean(steady_held)
        figures["accepted%"] = 100 * accepted / max(offered, 1)
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
    parser.add_argument("--cluster", choices=sorted(CLUSTERS), default="a100")
    parser.add_argument(
        "--departures", action="store_true", help="jobs leave; report steady-state figures"
    )
    args = parser.parse_args()
    first, _, last = args.seeds.partition("-")
    seeds = range(int(first), int(last or first) + 1)
    kinds = ", ".join(
        f"{share:.0%} {k.model} ×{k.gpus} cut {k.slicings}" for k, share in CLUSTERS[args.cluster]
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.nodes} nodes: {kinds}; "
        f"jobs {JOB_GIB} GiB with mix {JOB_MIX}; seeds {args.seeds}"
        + ("; jobs depart (offered load 130 %)" if args.departures else "")
    )
    columns = (
        ("used@steady", "held@steady", "accepted%")
        if args.departures
        else ("used@100%", "used@130%", "held@100%")
    )
    print(f"{'policy':<11}" + "".join(f"{c:>14}" for c in columns) + f"{'decision p99 ms':>17}")
    for policy in args.policies.split(","):
        runs = [replay(policy, args.nodes, seed, args.cluster, args.departures) for seed in seeds]
        p99 = max(r["decision_ms_p99"] for r in runs)
        cells = "".join(f"{_mean_sd(runs, c):>14}" for c in columns)
        print(f"{policy:<11}{cells}{p99:>17.2f}", flush=True)


if __name__ == "__main__":
    main()
