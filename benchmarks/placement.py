"""Per-decision placement latency on the 1,213-node openb cluster.

    python -m benchmarks.placement [--policies fgd,anypu] [--pods 3000]

Replays the default trace (seed 42) up to ``--pods`` arrivals per policy and prints the
median and p99 wall time of one decision (filter → score → pick over every node).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from anypu.placement.gpushare import POLICIES, load_nodes, load_pods, make_policy, typical_pods
from anypu.simulations._openb_protocol import inflate, replay
from anypu.simulations.openb import NODE_LIST, resolve_pod_list, trace_dir

from anypu.errors import AnypuError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.placement")
    p.add_argument("--policies", default=",".join(cls.name for cls in POLICIES))
    p.add_argument("--pods", type=int, default=3000, help="arrivals replayed per policy")
    args = p.parse_args(argv)
    try:
        folder = trace_dir()
        nodes = load_nodes(folder / NODE_LIST)
        pods = load_pods(resolve_pod_list("default", folder)[0], nodes.models)
    except AnypuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    typical = typical_pods(pods)
    arrivals = inflate(pods, nodes.gpu_capacity_milli, 42)
    arrivals = arrivals.take(np.arange(min(args.pods, len(arrivals))))
    print(f"{len(nodes)} nodes, {len(arrivals)} decisions per policy")
    print(f"{'policy':<12} {'median ms':>10} {'p99 ms':>10} {'max ms':>10}")
    for name in args.policies.split(","):
        result = replay(nodes, arrivals, make_policy(name, typical), 42, typical, track_frag=False)
        ms = result.decision_s * 1e3
        print(
            f"{name:<12} {np.median(ms):10.3f} {np.percentile(ms, 99):10.3f} {ms.max():10.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
