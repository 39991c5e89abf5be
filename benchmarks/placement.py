"""Placement speed: per-decision latency on the 1,213-node openb cluster, and batch solving.

    python -m benchmarks.placement [--policies fgd,anypu] [--pods 3000] [--batch-repeat 3]

1. Online: replays the default trace (seed 42) up to ``--pods`` arrivals per policy and
   prints the median and p99 wall time of one decision (filter → score → pick over every
   node), the policy's score caches included.
2. ``anypu-batch``: the same arrivals in windows of ``--window`` pods solved with CP-SAT;
   prints the wall time per window.
3. The live scheduler's ``anypu.placement.plan`` on 1,000 pending jobs and 10,000 devices
   (the cluster and jobs of ``benchmarks.placement_live``, seeded), ``--batch-repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from anypu.errors import AnypuError
from anypu.placement import PlacementConfig, plan
from anypu.placement.gpushare import (
    POLICIES,
    BatchPlacer,
    load_nodes,
    load_pods,
    make_policy,
    typical_pods,
)
from anypu.simulations import inflate, replay, replay_batch
from anypu.simulations.openb import NODE_LIST, resolve_pod_list, trace_dir
from benchmarks.placement_live import cluster, jobs


def _ms(values: np.ndarray) -> str:
    return f"{np.median(values):10.3f} {np.percentile(values, 99):10.3f} {values.max():10.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.placement")
    p.add_argument("--policies", default=",".join(cls.name for cls in POLICIES))
    p.add_argument("--pods", type=int, default=3000, help="arrivals replayed per policy")
    p.add_argument("--window", type=int, default=16, help="pods per anypu-batch window")
    p.add_argument("--batch-repeat", type=int, default=3, help="runs of the 1,000-job plan()")
    args = p.parse_args(argv)
    try:
        folder = trace_dir()
        nodes = load_nodes(folder / NODE_LIST)
        pods = load_pods(resolve_pod_list("default", folder)[0], nodes.models)
        names = [n.strip() for n in args.policies.split(",") if n.strip()]
        typical = typical_pods(pods)
        policies = [make_policy(name, typical) for name in names]
    except AnypuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores")
    arrivals = inflate(pods, nodes.gpu_capacity_milli, 42)
    arrivals = arrivals.take(np.arange(min(args.pods, len(arrivals))))
    print(f"online: {len(nodes)} nodes, {len(arrivals)} decisions per policy")
    print(f"{'policy':<12} {'median ms':>10} {'p99 ms':>10} {'max ms':>10}")
    for policy in policies:
        result = replay(nodes, arrivals, policy, 42, typical, track_frag=False)
        print(f"{policy.name:<12} {_ms(result.decision_s * 1e3)}", flush=True)

    placer = BatchPlacer(typical)
    result = replay_batch(nodes, arrivals, placer, typical, args.window, track_frag=False)
    per_window = result.decision_s[:: args.window] * args.window * 1e3
    print(
        f"anypu-batch  windows of {args.window}: per window (ms) median / p99 / max "
        f"{_ms(per_window)}; {placer.stats.optimal}/{placer.stats.windows} proved optimal",
        flush=True,
    )

    big, batch = cluster(10_000, seed=3), jobs(1_000, 100, seed=4)
    config = PlacementConfig()
    plan(big, batch, config=config)  # warm imports and caches, as a running scheduler is
    times = []
    for _ in range(args.batch_repeat):
        t0 = time.perf_counter()
        out = plan(big, batch, config=config)
        times.append(time.perf_counter() - t0)
    print(
        f"plan(): 1,000 jobs onto {sum(len(n.devices) for n in big.nodes):,} devices: median "
        f"{statistics.median(times):.3f} s, max {max(times):.3f} s over {len(times)} runs "
        f"({out.solver}, {len(out.placements)} placed)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
