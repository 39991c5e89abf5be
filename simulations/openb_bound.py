"""How much GPU can *any* placement allocate at 100 % arrival on an openb trace (issue 3)?

    python -m anypu.simulations.openb_bound --trace default --seeds 42-46
    python -m anypu.simulations.openb_bound --seeds 42 --compare fgd,anypu --json

Per seed, for the protocol's arrivals (shuffled and inflated exactly as the replay does):

* an **upper bound** on the GPU milli any placement, online or offline, can hold once the
  arrived request reaches the capacity (LP relaxations ``gpu`` and ``node``, each certified
  by weak duality; maths in :mod:`anypu.simulations._openb_bound`), hence a floor on the
  unallocated %, and the same bound on the replay's own ``alloc @100 %`` figure (a mean
  over the arrivals whose arrived % rounds to 100);
* an **offline placement** of those arrivals, checked from scratch, which leaves a
  reachable unallocated % (``--no-offline`` skips it; see
  :mod:`anypu.simulations._openb_offline`);
* an **online floor**: what every policy that places each pod that fits (the protocol's
  rule) must leave unallocated at 100 % arrival, certified by a waste LP and a minimum cut
  (maths in :mod:`anypu.simulations._openb_online_bound`; ``--no-online`` skips it);
* with ``--compare``, the replay's measured ``alloc @100 %`` for those policies.

The trace folder is ``$ANYPU_TRACES`` if set, else ``<repo>/../shared/traces/openb``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from anypu.errors import ConfigError
from anypu.placement.gpushare import NodeTable, PodTable, load_nodes, load_pods
from anypu.simulations._openb_bound import (
    RELAXATIONS,
    SeedBound,
    arrivals_within,
    bound_seed,
    window_arrivals,
)
from anypu.simulations._openb_offline import offline_placement, verify
from anypu.simulations._openb_online_bound import OnlineFloor, online_floor
from anypu.simulations.openb import (
    NODE_LIST,
    parse_policies,
    parse_seeds,
    resolve_pod_list,
    run_cli,
    run_one,
)

__all__ = [
    "OfflineResult",
    "SeedReport",
    "build_parser",
    "format_rows",
    "main",
    "parse_relaxations",
    "run_seed",
]


def parse_relaxations(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [n for n in names if n not in RELAXATIONS]
    if unknown or not names:
        raise ConfigError(
            f"--relaxations: unknown {', '.join(unknown) or '(none)'}; "
            f"choose a comma list of {', '.join(RELAXATIONS)}"
        )
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class OfflineResult:
    """The offline placement's outcome, as checked by :func:`verify`."""

    allocated_milli: int
    unalloc_pct: float
    gpu_pods_left_out: int
    cpu_pods_left_out: int
    headroom: float


@dataclass(frozen=True)
class SeedReport:
    """Everything the report shows for one seed; percentages are of GPU capacity."""

    seed: int
    bounds: tuple[SeedBound, ...]
    offline: OfflineResult | None
    measured: dict[str, float]  # policy → its replay's unallocated % at 100 % arrival
    online: OnlineFloor | None = None  # after the last arrival of the 100 % window

    @property
    def online_floor_100_pct(self) -> float:
        """Proved minimum of 100 − alloc @100 % for policies that place what fits: the
        better of the online floor and the floor on every placement."""
        online = self.online.floor_pct if self.online else 0.0
        return max(online, self.floor_100_pct)

    @property
    def floor_pct(self) -> float:
        """Proved minimum unallocated % once the arrived request reaches the capacity."""
        return 100.0 - min(b.alloc_pct for b in self.bounds)

    @property
    def floor_100_pct(self) -> float:
        """Proved minimum of the replay's own figure, 100 − alloc @100 %."""
        return 100.0 - min(b.window_alloc_pct for b in self.bounds)

    def as_json(self) -> dict[str, object]:
        first = self.bounds[0]
        return {
            "seed": self.seed,
            "pods_arrived": first.pods,
            "gpu_pods_arrived": first.gpu_pods,
            "arrived_pct": round(first.arrived_pct, 4),
            "unalloc_floor_pct": round(self.floor_pct, 4),
            "unalloc_100_floor_pct": round(self.floor_100_pct, 4),
            "bounds": [b.as_json() for b in self.bounds],
            "offline": asdict(self.offline) if self.offline else None,
            "unalloc_100_online_floor_pct": (
                round(self.online_floor_100_pct, 4) if self.online else None
            ),
            "online": (
                {
                    "floor_milli": self.online.floor_milli,
                    "lambda": self.online.lam,
                    "anchor_pct": self.online.anchor_pct,
                    "seconds": round(self.online.seconds, 2),
                }
                if self.online
                else None
            ),
            "measured_unalloc_100_pct": {p: round(v, 4) for p, v in self.measured.items()},
        }


def run_seed(
    nodes: NodeTable,
    pods: PodTable,
    seed: int,
    relaxations: Sequence[str] = RELAXATIONS,
    ratio: float = 1.3,
    offline: bool = True,
    compare: Sequence[str] = (),
    online: bool = True,
) -> SeedReport:
    """Bounds, offline placement, online floor and (``compare``) measured replays for
    one seed."""
    bounds = tuple(bound_seed(nodes, pods, seed, r, ratio) for r in relaxations)
    arrivals, within = arrivals_within(nodes, pods, seed, ratio)
    result = None
    if offline:
        prefix = arrivals.take(np.arange(within))
        placement = offline_placement(nodes, prefix)
        allocated = verify(nodes, prefix, placement)
        gpu = prefix.num_gpu > 0
        result = OfflineResult(
            allocated_milli=allocated,
            unalloc_pct=round(100.0 - allocated / nodes.gpu_capacity_milli * 100.0, 4),
            gpu_pods_left_out=int((~placement.placed & gpu).sum()),
            cpu_pods_left_out=int((~placement.placed & ~gpu).sum()),
            headroom=placement.headroom,
        )
    floor = None
    if online:
        window = window_arrivals(arrivals, nodes.gpu_capacity_milli)
        if len(window):  # the floor after the window's last arrival holds for all of it
            floor = online_floor(nodes, arrivals, int(window[-1]))
    measured = {p: 100.0 - run_one(nodes, pods, p, seed, ratio, False).alloc_100 for p in compare}
    return SeedReport(seed, bounds, result, measured, floor)


def format_rows(reports: Sequence[SeedReport], workload: str, target: float) -> str:
    """One line per seed (unallocated %: the floors, the offline placement, the replays),
    then the verdict on ``target``."""
    relaxations = [b.relaxation for b in reports[0].bounds]
    compare = list(reports[0].measured)
    online = all(r.online for r in reports)
    head = (
        f"{'seed':>4} {'pods':>6} {'arrived%':>8} "
        + " ".join(f"{'floor ' + r:>10}" for r in relaxations)
        + f" {'floor@100':>9}"
        + (f" {'online@100':>10}" if online else "")
        + f" {'offline':>8}"
        + "".join(f" {p + '@100':>12}" for p in compare)
    )
    lines = [f"trace {workload}: unallocated GPU % at 100 % arrival (floor = proved minimum)"]
    lines += [head, "-" * len(head)]
    for rep in reports:
        first = rep.bounds[0]
        cells = [f"{rep.seed:>4} {first.pods:>6} {first.arrived_pct:>8.3f}"]
        cells += [f"{100.0 - b.alloc_pct:>10.3f}" for b in rep.bounds]
        cells.append(f"{rep.floor_100_pct:>9.3f}")
        if online:
            cells.append(f"{rep.online_floor_100_pct:>10.3f}")
        cells.append(f"{rep.offline.unalloc_pct:>8.3f}" if rep.offline else f"{'—':>8}")
        cells += [f"{rep.measured[p]:>12.3f}" for p in compare]
        lines.append(" ".join(cells))
    floor = [r.floor_pct for r in reports]
    span = _span(floor)
    lines.append("")
    if min(floor) > target:
        lines.append(
            f"≤ {target:g} % unallocated is provably unreachable by any placement, offline "
            f"included (floor {span})"
        )
    else:
        below = sum(f <= target for f in floor)
        lines.append(
            f"≤ {target:g} % unallocated is not provably unreachable offline: floor {span}, "
            f"below the target on {below} of {len(reports)} seeds"
        )
    if online:
        lines.append(_online_verdict([r.online_floor_100_pct for r in reports], target))
    reached = [r.offline.unalloc_pct for r in reports if r.offline]
    if reached:
        ok = sum(u <= target for u in reached)
        lines.append(
            f"offline placements leave {_span(reached)} unallocated "
            f"(≤ {target:g} % on {ok} of {len(reached)} seeds)"
        )
    return "\n".join(lines)


def _online_verdict(floors: Sequence[float], target: float) -> str:
    who = "any online policy (one that places every pod that fits, as the protocol asks)"
    if min(floors) > target:
        return (
            f"≤ {target:g} % at 100 % arrival is provably unreachable for {who}: "
            f"online floor {_span(floors)}"
        )
    below = sum(f <= target for f in floors)
    return (
        f"≤ {target:g} % at 100 % arrival is not provably unreachable for {who}: online "
        f"floor {_span(floors)}, below the target on {below} of {len(floors)} seeds"
    )


def _span(values: Sequence[float]) -> str:
    lo, hi = f"{min(values):.2f}", f"{max(values):.2f}"
    return f"{lo} %" if lo == hi else f"{lo}–{hi} %"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m anypu.simulations.openb_bound",
        description="Bound the GPU any placement can allocate at 100 %% arrival on openb.",
    )
    p.add_argument("--trace", default="default", help="variant name or pod-list CSV path")
    p.add_argument("--nodes", default=None, help="node list CSV (default: the trace's GPU nodes)")
    p.add_argument("--seeds", default="42-46", help="e.g. 42-46 or 42,43")
    p.add_argument("--ratio", type=float, default=1.3, help="inflation ratio, as the replay's")
    p.add_argument(
        "--relaxations", default=",".join(RELAXATIONS), help=f"comma list of {RELAXATIONS}"
    )
    p.add_argument("--no-offline", action="store_true", help="skip the offline placement")
    p.add_argument("--no-online", action="store_true", help="skip the online floor")
    p.add_argument(
        "--compare", default="", help="also replay these policies (e.g. fgd,anypu; slow)"
    )
    p.add_argument("--target", type=float, default=3.5, help="unallocated %% to judge")
    p.add_argument("--json", action="store_true", help="print one JSON list of rows instead")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    relaxations = parse_relaxations(args.relaxations)
    compare = parse_policies(args.compare) if args.compare.strip() else []
    if not 0 < args.ratio <= 3:
        raise ConfigError(f"--ratio must be in (0, 3], got {args.ratio}")
    if not 0 <= args.target <= 100:
        raise ConfigError(f"--target is a percentage in [0, 100], got {args.target}")
    pod_path, workload = resolve_pod_list(args.trace, None)
    node_path = Path(args.nodes) if args.nodes else pod_path.parent / NODE_LIST
    if not node_path.is_file():
        raise ConfigError(f"node list {node_path} does not exist: pass --nodes PATH")
    nodes = load_nodes(node_path)
    pods = load_pods(pod_path, nodes.models)
    reports = []
    for seed in seeds:
        print(f"openb_bound: {workload} seed {seed}", file=sys.stderr, flush=True)
        offline = not args.no_offline
        reports.append(
            run_seed(
                nodes, pods, seed, relaxations, args.ratio, offline, compare, not args.no_online
            )
        )
    if args.json:
        print(json.dumps([r.as_json() for r in reports]))
    else:
        print(format_rows(reports, workload, args.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
