"""Demand-sized GPU shares, live: does the scheduler allocate what the simulator does?

Run from the repository root (the openb trace must be where ``simulations.openb`` finds
it, ``$ANYPU_TRACES`` or ``../shared/traces/openb``)::

    python -m benchmarks.sharing [--nodes 40] [--seeds 42-44]
        [--policies fgd,anypu-ss,bestfit] [--trace default] [--load 1.1]

The same nodes and jobs go through two placers:

- **live**: the scheduler's own state machine (``SchedulerState.handle``: a submission
  triggers a placement round over the snapshot it keeps, reservations and all, exactly
  as in ``anypu scheduler``), with one simulated agent per openb node whose GPUs are
  shared devices (``Device.shared``, 20 seats each). Agents are messages here, not
  processes (40 nodes of worker processes do not fit on 2 cores); a job's departure is
  its agent's ``JobResult``. Each job reserves the trace pod's GPU share
  (``SubmitRequest.compute_milli``) and 1 MiB of memory, so its share is the pod's milli.
- **sim**: the openb replay (``simulations.replay``): the policy's
  ``choose`` and ``ClusterState.bind`` straight, with the typical workload of the trace.

Nodes are ``--nodes`` drawn from openb's GPU node list (seeded), met in the replay's
seeded order (the live agents join in that order). Jobs are the trace's pods that ask for
one GPU or a share of one (multi-GPU and CPU-only pods have no live equivalent: a live
job runs on one device), with their GPU model preference dropped and no host CPU or
memory asked (the live scheduler reserves none for an accelerator job), inflated to 130 %
of the sample's GPU capacity as the openb protocol does. A job that fits nowhere is
dropped in both (the live one is cancelled as soon as its round held it back).

Phase 1 (the openb protocol, nothing departs): GPU milli allocated when the arrived
requests reach 100 % and 130 % of capacity. Phase 2, arrivals and departures: jobs
drawn as in phase 1 until they ask 8 × the capacity, each placed one departing after an
exponential number of arrivals whose mean makes the offered load ``--load`` × capacity
(the same seeded draws in both); the figure is the mean allocation over the second half
of the arrivals.
Decision times are the live scheduler's: the wall time of one ``handle`` of a submission.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from anypu import PROTOCOL_VERSION
from anypu.devices import Device
from anypu.placement import PlacementConfig
from anypu.placement.gpushare import (
    ClusterState,
    NodeTable,
    PodTable,
    Request,
    load_nodes,
    load_pods,
    make_policy,
    typical_pods,
)
from anypu.protos import messages as m
from anypu.scheduler import (
    AgentConnected,
    AgentSaid,
    CancelRequested,
    JobSubmitted,
    SchedulerConfig,
    SchedulerState,
)
from anypu.simulations import by_arrival, inflate, replay, shuffle_nodes
from anypu.simulations.openb import NODE_LIST, parse_seeds, resolve_pod_list, trace_dir
from benchmarks import machine, percentile

GiB = 2**30
SEATS = 20  # the trace's smallest share is 50 milli: 20 fit one GPU
#: Nominal memory and dense fp32 TFLOPS of openb's GPU models (the trace names only the
#: model; G2/G3 are Alibaba's names, given a T4's and a V100's figures). Memory and
#: throughput only shape the display and the compute term here: every job's share is
#: its pod's milli.
GPU_MODELS = {
    "P100": (16, 9.3),
    "T4": (16, 8.1),
    "V100M16": (16, 15.7),
    "V100M32": (32, 15.7),
    "A10": (24, 31.2),
    "G2": (16, 8.1),
    "G3": (32, 15.7),
}


@dataclass(frozen=True)
class Outcome:
    """One placer's run over one seed's arrivals."""

    alloc_100: float
    alloc_130: float
    steady: float  # phase 2: mean allocation % over the second half of the arrivals
    decisions_ms: tuple[float, ...] = ()


def sample_nodes(nodes: NodeTable, count: int, seed: int) -> NodeTable:
    """``count`` openb nodes drawn without replacement, in the replay's seeded order."""
    rng = np.random.default_rng((seed, 7))
    picked = np.sort(rng.choice(len(nodes), size=min(count, len(nodes)), replace=False))
    return shuffle_nodes(nodes.take(picked), seed)


def single_gpu_jobs(pods: PodTable) -> PodTable:
    """The pods with a live equivalent (one GPU or a share of one), asking the GPU only."""
    keep = np.flatnonzero(pods.num_gpu == 1)
    one = pods.take(keep)
    zero = np.zeros(len(one), dtype=np.int64)
    return replace(one, cpu=zero, mem=zero, spec=zero, spec_text=())


def lifetimes(n: int, mean: float, seed: int) -> np.ndarray:
    """How many arrivals after its own each job departs (if it was placed)."""
    rng = np.random.default_rng((seed, 11))
    return np.maximum(1, np.round(rng.exponential(mean, size=n))).astype(np.int64)


# ---------------------------------------------------------------- live


def _join(node: int, nodes: NodeTable) -> m.Join:
    model = nodes.models[int(nodes.model[node])]
    memory_gib, tflops = GPU_MODELS.get(model, (16, 10.0))
    gpu = Device("gpu0", "gpu", "nvidia", model, memory_gib * GiB, tflops, "cpu", simulated=True)
    devices = [
        replace(gpu, device_id=f"gpu{i}", slices=SEATS, shared=True, sharing="time")
        for i in range(int(nodes.gpus[node]))
    ]
    host = Device(
        "cpu0", "cpu", "intel", "host", int(nodes.mem[node]) << 20, 1.0, "cpu",
        simulated=True, threads=max(1, int(nodes.cpu[node]) // 1000),
    )  # fmt: skip
    return m.Join(PROTOCOL_VERSION, "", f"n{node:03d}", "cloud", devices=(host, *devices))


def run_live(
    nodes: NodeTable, pods: PodTable, churn: PodTable, lives: np.ndarray, policy: str, seed: int
) -> Outcome:
    """Both phases through ``SchedulerState`` (the module docstring)."""
    alloc_100, alloc_130, decisions = _live_phase(nodes, pods, policy, seed, None)
    steady, _, more = _live_phase(nodes, churn, policy, seed, lives)
    return Outcome(alloc_100, alloc_130, steady, tuple(decisions + more))


def _live_phase(
    nodes: NodeTable,
    pods: PodTable,
    policy: str,
    seed: int,
    lives: np.ndarray | None,
) -> tuple[float, float, list[float]]:
    config = SchedulerConfig(
        placement=PlacementConfig(policy=policy, seed=seed), unschedulable_timeout_s=1e9
    )
    state = SchedulerState(config)
    for node in range(len(nodes)):
        state.handle(AgentConnected(_join(node, nodes), now=0.0))
    capacity = nodes.gpu_capacity_milli
    milli = pods.gpu_milli.tolist()
    arrived = np.cumsum(pods.gpu_milli) / capacity * 100.0
    alloc = np.zeros(len(pods))
    departs: dict[int, list[tuple[str, str]]] = {}
    decisions: list[float] = []
    allocated = 0
    clock = time.perf_counter
    for i in range(len(pods)):
        now = float(i + 1)
        for job_id, node_id in departs.pop(i, ()):
            job = state.jobs[job_id]
            allocated -= job.placement.milli if job.placement else 0
            result = m.JobResult(job_id, job.attempt, outputs=b"")
            state.handle(AgentSaid(node_id, 1, result, now=now))
        job_id = f"j{i}"
        request = m.SubmitRequest(
            artifact_digest="d" * 64,
            flops=1e9,
            memory_bytes=1 << 20,
            device_kinds=("gpu",),
            compute_milli=milli[i],
        )
        t0 = clock()
        state.handle(JobSubmitted(job_id, request, now=now))
        decisions.append((clock() - t0) * 1e3)
        job = state.jobs[job_id]
        if job.state == "placed" and job.placement is not None:
            allocated += job.placement.milli
            if lives is not None:
                departs.setdefault(i + int(lives[i]), []).append((job_id, job.placement.node_id))
        else:
            state.handle(CancelRequested(job_id, now=now))  # dropped, as the replay drops it
        alloc[i] = allocated / capacity * 100.0
    if lives is not None:
        return float(alloc[len(alloc) // 2 :].mean()), 0.0, decisions
    curve = by_arrival(arrived, alloc)
    return float(curve[100]), float(curve[130]), decisions


# ---------------------------------------------------------------- simulator


def run_sim(
    nodes: NodeTable, pods: PodTable, churn: PodTable, lives: np.ndarray, policy: str, seed: int
) -> Outcome:
    typical = typical_pods(pods)
    done = replay(nodes, pods, make_policy(policy, typical), seed, typical, track_frag=False)
    steady = _sim_with_departures(nodes, churn, policy, seed, lives)
    return Outcome(done.at(100), done.at(130), steady)


def _sim_with_departures(
    nodes: NodeTable, pods: PodTable, policy_name: str, seed: int, lives: np.ndarray
) -> float:
    """The replay's choose-and-bind with each placed pod released ``lives[i]`` arrivals on."""
    typical = typical_pods(pods)
    policy = make_policy(policy_name, typical)
    state = ClusterState(nodes)
    rng = np.random.default_rng(seed)
    departs: dict[int, list[tuple[int, tuple[int, ...], int]]] = {}
    alloc = np.zeros(len(pods))
    for i, share in enumerate(pods.gpu_milli.tolist()):
        for node, gpus, milli in departs.pop(i, ()):
            state.release(node, gpus, 0, 0, milli)
        choice = policy.choose(state, Request(0, 0, 1, share, 0), rng)
        if choice is not None:
            state.bind(choice.node, choice.gpus, 0, 0, share)
            departs.setdefault(i + int(lives[i]), []).append((choice.node, choice.gpus, share))
        alloc[i] = state.allocated_milli / nodes.gpu_capacity_milli * 100.0
    return float(alloc[len(alloc) // 2 :].mean())


# ---------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--seeds", default="42-44")
    parser.add_argument("--policies", default="fgd,anypu-ss,bestfit")
    parser.add_argument("--trace", default="default")
    parser.add_argument("--load", type=float, default=1.1)
    args = parser.parse_args(argv)
    folder = trace_dir()
    all_nodes = load_nodes(folder / NODE_LIST)
    path, _ = resolve_pod_list(args.trace, folder)
    trace_pods = single_gpu_jobs(load_pods(path, all_nodes.models))
    print(machine())
    print(
        f"openb {args.trace}: {args.nodes} GPU nodes, {len(trace_pods)} one-GPU pods in the"
        f" trace; seeds {args.seeds}; phase 2 offered load {args.load:g} × capacity"
    )
    header = (
        f"{'policy':<10} {'seed':>4} {'GPUs':>4} {'jobs':>5}  {'alloc@100 live/sim':>19}"
        f"  {'alloc@130 live/sim':>19}  {'steady live/sim':>16}"
    )
    print(header)
    rows: dict[str, list[tuple[Outcome, Outcome]]] = {}
    for policy in args.policies.split(","):
        for seed in parse_seeds(args.seeds):
            nodes = sample_nodes(all_nodes, args.nodes, seed)
            capacity = nodes.gpu_capacity_milli
            pods = inflate(trace_pods, capacity, seed)
            churn = inflate(trace_pods, capacity, seed, ratio=8.0)
            mean_life = args.load * capacity / float(churn.gpu_milli.mean())
            lives = lifetimes(len(churn), mean_life, seed)
            live = run_live(nodes, pods, churn, lives, policy, seed)
            sim = run_sim(nodes, pods, churn, lives, policy, seed)
            rows.setdefault(policy, []).append((live, sim))
            print(
                f"{policy:<10} {seed:>4} {int(nodes.gpus.sum()):>4} {len(pods):>5}"
                f"  {live.alloc_100:>8.1f} / {sim.alloc_100:<8.1f}"
                f"  {live.alloc_130:>8.1f} / {sim.alloc_130:<8.1f}"
                f"  {live.steady:>6.1f} / {sim.steady:<7.1f}",
                flush=True,
            )
    print("\nmean over seeds (live − sim, points) and the live scheduler's decision time")
    for policy, pairs in rows.items():
        gap = [live.alloc_100 - sim.alloc_100 for live, sim in pairs]
        gap130 = [live.alloc_130 - sim.alloc_130 for live, sim in pairs]
        steady = [live.steady - sim.steady for live, sim in pairs]
        decisions = [d for live, _ in pairs for d in live.decisions_ms]
        print(
            f"{policy:<10} alloc@100 {statistics.mean(gap):+.2f}  alloc@130"
            f" {statistics.mean(gap130):+.2f}  steady {statistics.mean(steady):+.2f}"
            f"   decision median {statistics.median(decisions):.2f} ms,"
            f" p99 {percentile(decisions, 0.99):.2f} ms ({len(decisions)} decisions)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
