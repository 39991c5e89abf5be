"""Replay Alibaba's openb GPU-sharing trace with placement policies (issue 3).

    python -m anypu.simulations.openb --trace default --policies all --seeds 42-46
    python -m anypu.simulations.openb --policies anypu,anypu-batch --window 16
    python -m anypu.simulations.openb --policies anypu-repack

``all`` is the eight online policies (one pod at a time; ``anypu-ss`` is anypu plus the
Sum-of-Squares bin-packing rule for sharing pods); ``anypu-batch`` places windows of
pending pods with CP-SAT, and ``anypu-repack`` is online anypu that may move up to two
running sharing pods to make room for a pod that fits nowhere: each is only run when
named, as its own row. Prints allocation at 100 %/130 % arrival, fragmentation and
decision time per policy next to the FGD paper's published numbers, and writes a CSV and a
PNG (allocation vs arrival) to ``--out``. Progress goes to stderr. The trace folder is ``$ANYPU_TRACES``
if set, else ``<repo>/../shared/traces/openb``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from anypu.errors import AnypuError, ConfigError
from anypu.placement.gpushare import (
    AnypuPolicy,
    BatchPlacer,
    NodeTable,
    PodTable,
    load_nodes,
    load_pods,
    make_policy,
    typical_pods,
)
from anypu.placement.gpushare._policies import TRACE_POLICIES
from anypu.simulations._openb_protocol import (
    by_arrival,
    inflate,
    replay,
    replay_batch,
    shuffle_nodes,
)
from anypu.simulations._openb_repack import replay_repack
from anypu.simulations._openb_report import (
    RunRow,
    format_table,
    load_reference,
    write_csv,
    write_plot,
)

__all__ = ["main", "parse_seeds", "resolve_pod_list", "run_one", "trace_dir"]

NODE_LIST = "openb_node_list_gpu_node.csv"
POLICY_NAMES = tuple(cls.name for cls in TRACE_POLICIES)  # online, one pod at a time
BATCH = "anypu-batch"  # windows of pending pods with CP-SAT: its own row, never "all"
REPACK = "anypu-repack"  # online anypu + moves of running sharing pods: its own row too
ALL_NAMES = (*POLICY_NAMES, BATCH, REPACK)


def trace_dir() -> Path:
    """``$ANYPU_TRACES`` or ``<repo>/../shared/traces/openb``; must exist."""
    env = os.environ.get("ANYPU_TRACES")
    repo = Path(__file__).resolve().parents[1]
    path = Path(env) if env else repo.parent / "shared" / "traces" / "openb"
    if not path.is_dir():
        how = "ANYPU_TRACES" if env else "the default location"
        raise ConfigError(
            f"openb trace folder {path} (from {how}) does not exist: set ANYPU_TRACES to the "
            "folder holding openb_node_list_gpu_node.csv and openb_pod_list_*.csv"
        )
    return path


def resolve_pod_list(trace: str, folder: Path | None) -> tuple[Path, str]:
    """A variant name (``default``, ``gpushare40``, ...) or a CSV path → (path, workload)."""
    candidate = Path(trace)
    if candidate.suffix == ".csv" or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(f"pod list {candidate} does not exist: pass a CSV path or a variant")
        return candidate, candidate.stem
    folder = folder or trace_dir()
    path = folder / f"openb_pod_list_{trace}.csv"
    if not path.is_file():
        known = sorted(
            p.stem.removeprefix("openb_pod_list_") for p in folder.glob("openb_pod_list_*.csv")
        )
        raise ConfigError(
            f"no pod list for trace {trace!r} in {folder}; variants there: {', '.join(known)}"
        )
    return path, path.stem


def parse_seeds(text: str) -> list[int]:
    """``42-46`` or ``42,44`` (or a mix) → sorted unique seeds."""
    seeds: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.update(range(lo, hi + 1))
            elif part:
                seeds.add(int(part))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: write e.g. 42-46 or 42,43,44") from None
    if not seeds:
        raise ConfigError("--seeds is empty: write e.g. 42-46")
    return sorted(seeds)


def parse_policies(text: str) -> list[str]:
    """``all`` (the online policies), names, or a mix such as ``all,anypu-batch``."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        names.extend(POLICY_NAMES if part == "all" else [part] if part else [])
    unknown = [p for p in names if p not in ALL_NAMES]
    if unknown or not names:
        raise ConfigError(
            f"--policies: unknown {', '.join(unknown) or '(none)'}; choose 'all' (the online "
            f"policies) or a comma list of {', '.join(ALL_NAMES)}"
        )
    return list(dict.fromkeys(names))


def run_one(
    nodes: NodeTable,
    pods: PodTable,
    policy_name: str,
    seed: int,
    ratio: float,
    verbose: bool,
    window: int = 16,
) -> RunRow:
    """Inflate with ``seed``, meet the nodes in the seed's order, replay with one policy
    (``anypu-batch``: in windows of ``window`` pods), reduce to a row."""
    typical = typical_pods(pods)
    arrivals = inflate(pods, nodes.gpu_capacity_milli, seed, ratio)
    nodes = shuffle_nodes(nodes, seed)  # where ties go, as in the artifact (see the protocol)

    def progress(done: int, total: int) -> None:
        print(f"  {policy_name} seed {seed}: {done}/{total} pods", file=sys.stderr, flush=True)

    report = progress if verbose else None
    migrations: int | None = None
    if policy_name == BATCH:
        placer = BatchPlacer(typical)
        result = replay_batch(nodes, arrivals, placer, typical, window, progress=report)
    elif policy_name == REPACK:
        anypu = AnypuPolicy(typical)
        result, stats = replay_repack(nodes, arrivals, anypu, seed, progress=report)
        migrations = stats.migrations
    else:
        policy = make_policy(policy_name, typical)
        result = replay(nodes, arrivals, policy, seed, typical, progress=report)
    ms = result.decision_s * 1e3
    curve = by_arrival(result.arrived_pct, result.alloc_pct)
    frag = by_arrival(result.arrived_pct, result.frag_pct)
    return RunRow(
        policy=policy_name,
        seed=seed,
        alloc_100=float(curve[100]),
        alloc_130=float(curve[130]) if not np.isnan(curve[130]) else float(np.nanmax(curve)),
        frag_100=float(frag[100]),
        decision_ms_median=float(np.median(ms)),
        decision_ms_p99=float(np.percentile(ms, 99)),
        replay_s=result.wall_s,
        alloc_curve=tuple(float(v) for v in curve),
        migrations=migrations,
        placed=int(result.placed.sum()),
    )


def _task(args: tuple[str, str, str, int, float, int]) -> RunRow:
    node_path, pod_path, policy, seed, ratio, window = args
    nodes = load_nodes(node_path)
    return run_one(nodes, load_pods(pod_path, nodes.models), policy, seed, ratio, False, window)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m anypu.simulations.openb",
        description="Replay the openb GPU-sharing trace with placement policies.",
    )
    p.add_argument("--trace", default="default", help="variant name or pod-list CSV path")
    p.add_argument("--nodes", default=None, help="node list CSV (default: the trace's GPU nodes)")
    p.add_argument("--policies", default="all", help=f"'all' or a comma list of {ALL_NAMES}")
    p.add_argument("--window", type=int, default=16, help=f"pods per {BATCH} window")
    p.add_argument("--seeds", default="42-46", help="e.g. 42-46 or 42,43")
    p.add_argument("--ratio", type=float, default=1.3, help="inflate arrivals to this x capacity")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (at most 2 advised)")
    p.add_argument("--out", default="out/openb", help="folder for the CSV and PNG")
    p.add_argument("--json", action="store_true", help="print one JSON list of rows instead")
    return p


def run_cli(
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv`` and run ``body``: a user's mistake is one ``error:`` line, exit 2."""
    args = parser.parse_args(argv)
    try:
        return body(args)
    except AnypuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    policies = parse_policies(args.policies)
    seeds = parse_seeds(args.seeds)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.window < 1:
        raise ConfigError(f"--window must be at least 1 pod, got {args.window}")
    if not 0 < args.ratio <= 3:
        raise ConfigError(f"--ratio must be in (0, 3], got {args.ratio}")
    pod_path, workload = resolve_pod_list(args.trace, None)
    folder = pod_path.parent
    node_path = Path(args.nodes) if args.nodes else folder / NODE_LIST
    if not node_path.is_file():
        raise ConfigError(f"node list {node_path} does not exist: pass --nodes PATH")
    nodes = load_nodes(node_path)
    pods = load_pods(pod_path, nodes.models)
    tasks = [(p, s) for p in policies for s in seeds]
    print(
        f"openb: {workload}, {len(nodes)} nodes, {nodes.gpu_capacity_milli // 1000} GPUs, "
        f"{len(pods)} pods; {len(tasks)} replays on {args.jobs} process(es)",
        file=sys.stderr,
        flush=True,
    )
    rows: dict[tuple[str, int], RunRow] = {}
    started = time.perf_counter()

    def done(row: RunRow) -> None:
        rows[(row.policy, row.seed)] = row
        moved = "" if row.migrations is None else f", {row.migrations} moves/{row.placed} placed"
        print(
            f"[{len(rows)}/{len(tasks)}] {row.policy} seed {row.seed}: alloc@100 "
            f"{row.alloc_100:.2f}% frag@100 {row.frag_100:.2f}%{moved} ({row.replay_s:.1f} s, "
            f"{time.perf_counter() - started:.0f} s elapsed)",
            file=sys.stderr,
            flush=True,
        )

    if args.jobs == 1:
        for p, s in tasks:
            done(run_one(nodes, pods, p, s, args.ratio, True, args.window))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(_task, (str(node_path), str(pod_path), p, s, args.ratio, args.window))
                for p, s in tasks
            ]
            for fut in as_completed(futures):
                done(fut.result())
    ordered = [rows[t] for t in tasks]
    out = Path(args.out)
    csv_path, png_path = out / f"{workload}.csv", out / f"{workload}.png"
    write_csv(ordered, csv_path, workload)
    write_plot(ordered, png_path, f"openb {workload}: GPU allocation vs arrival")
    if args.json:
        print(json.dumps([r.as_json() for r in ordered]))
    else:
        reference = load_reference(folder / "reference")
        print(format_table(ordered, reference, workload, seeds))
        print(f"\nwrote {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
