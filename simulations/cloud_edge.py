"""Model calls with deadlines over a cloud–edge–device network: anypu's placement against
cloud-only, edge-only, nearest-first and a Ray-like hybrid (issue 15).

    python -m anypu.simulations.cloud_edge [--seeds 1-5] [--topology FILE] [--workload FILE]

Every policy serves the same calls (Poisson streams from several origins, each with a
deadline) on the same cluster; ``anypu`` is the live scheduler's ``placement.plan`` with
the call's deadline, the others are the baselines of ``_edge_replay``. Prints deadline
attainment, p50/p99 latency, cost per 1,000 calls and where calls ran, per policy,
mean over the seeds; writes a CSV and a PNG (latency distribution per policy) to
``--out``; progress goes to stderr. ``--topology`` and ``--workload`` take files in the
format of the defaults (``simulations/scenarios/``, documented in ``_edge_scenario``).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from anypu.errors import AnypuError
from anypu.simulations._edge_replay import POLICIES, Result, calls_of, replay, whole_call_bound
from anypu.simulations._edge_scenario import (
    DEFAULT_TOPOLOGY,
    DEFAULT_WORKLOAD,
    Scenario,
    load_scenario,
)
from anypu.simulations.openb import parse_seeds

__all__ = ["main"]


def _progress(policy: str, seed: int) -> Callable[[int, int], None]:
    def say(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        print(
            f"\r  {policy:<14} seed {seed} [{bar}] {done}/{total}",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return say


def _row(results: list[Result]) -> dict[str, float | str]:
    calls = sum(len(r.met) for r in results)
    tiers: Counter[str] = Counter(t for r in results for t in r.tier)
    return {
        "attainment": statistics.mean(r.attainment() for r in results),
        "p50_ms": statistics.mean(r.quantile(0.5) for r in results) * 1e3,
        "p99_ms": statistics.mean(r.quantile(0.99) for r in results) * 1e3,
        "cost_per_1000": sum(r.cost for r in results) / max(1, calls) * 1000,
        "where": ", ".join(f"{t} {n / calls:.0%}" for t, n in tiers.most_common()),
    }


def _per_stream(scenario: Scenario, results: dict[str, list[Result]]) -> None:
    """Deadlines met per stream and policy: where each policy loses its calls."""
    streams = scenario.streams
    print(
        "\n| policy | "
        + " | ".join(f"{s.origin} {s.model} {s.deadline_s * 1e3:g} ms" for s in streams)
        + " |"
    )
    print("|---|" + "---|" * len(streams))
    for policy, runs in results.items():
        cells = (statistics.mean(r.attainment_of(i) for r in runs) for i in range(len(streams)))
        print(f"| {policy} | " + " | ".join(f"{c:.0%}" for c in cells) + " |")


def _plot(results: dict[str, list[Result]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, runs in results.items():
        latencies = np.sort([x * 1e3 for r in runs for x in r.latency if x != float("inf")])
        if len(latencies):
            ax.plot(latencies, np.arange(1, len(latencies) + 1) / len(latencies), label=policy)
    ax.set_xscale("log")
    ax.set_xlabel("latency, call to outputs back (ms)")
    ax.set_ylabel("share of calls")
    ax.set_title("cloud–edge–device calls: latency by policy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    parser.add_argument("--seeds", default="1-3", help="e.g. 1-5 or 1,4,9")
    parser.add_argument(
        "--load", type=float, default=1.0, help="multiply every stream's rate by this (1.0)"
    )
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    parser.add_argument(
        "--out", type=Path, default=Path("out/cloud_edge"), help="CSV and PNG go here"
    )
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.topology, args.workload)
        if not args.load > 0:
            raise AnypuError(f"--load must be greater than 0, got {args.load}")
        scenario.streams = [
            replace(s, rate_per_s=s.rate_per_s * args.load) for s in scenario.streams
        ]
        seeds = parse_seeds(args.seeds)
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        unknown = sorted(set(policies) - set(POLICIES))
        if unknown:
            raise AnypuError(f"unknown policy {unknown}: choose from {list(POLICIES)}")
    except AnypuError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results: dict[str, list[Result]] = {p: [] for p in policies}
    bounds: list[Result] = []
    started = time.perf_counter()
    for seed in seeds:
        calls = calls_of(scenario, seed)
        bounds.append(whole_call_bound(scenario, calls, seed))
        for policy in policies:
            results[policy].append(replay(scenario, calls, policy, seed, _progress(policy, seed)))
            print(file=sys.stderr)
    rows = {p: _row(r) for p, r in results.items()}
    count = len(results[policies[0]][0].met)
    print(
        f"{args.topology.name} × {args.workload.name} at load {args.load:g}: {count} calls"
        f" (first seed) over {scenario.duration_s:g} s, seeds {args.seeds},"
        f" {time.perf_counter() - started:.0f} s"
    )
    print("| policy | deadlines met | p50 | p99 | cost / 1000 calls | where calls ran |")
    print("|---|---|---|---|---|---|")
    for policy, row in rows.items():
        print(
            f"| {policy} | {row['attainment']:.1%} | {row['p50_ms']:.1f} ms |"
            f" {row['p99_ms']:.1f} ms | ${row['cost_per_1000']:.4f} | {row['where']} |"
        )
    print(
        f"no policy that runs each call whole on one device can meet more than"
        f" {statistics.mean(r.attainment() for r in bounds):.1%} (every call alone on the"
        " cluster, on the device that finishes it first, with its own noise draw)"
    )
    _per_stream(scenario, {**results, "whole-call bound": bounds})
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "cloud_edge.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["policy", "seed", "attainment", "p50_s", "p99_s", "cost"])
        for policy, runs in results.items():
            for seed, r in zip(seeds, runs, strict=True):
                writer.writerow(
                    [policy, seed, r.attainment(), r.quantile(0.5), r.quantile(0.99), r.cost]
                )
    _plot(results, args.out / "cloud_edge.png")
    print(f"wrote {args.out / 'cloud_edge.csv'} and {args.out / 'cloud_edge.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
