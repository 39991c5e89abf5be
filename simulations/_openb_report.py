"""Published reference numbers, and the table / CSV / PNG of an openb run."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

__all__ = [
    "REFERENCE_NAMES",
    "Reference",
    "RunRow",
    "format_table",
    "load_reference",
    "summarise",
    "write_csv",
    "write_plot",
]

# Our policy names → the artifact's directory names in reference/*.csv.
REFERENCE_NAMES = {
    "random": "01-Random",
    "dotprod": "02-DotProd",
    "clustering": "03-GpuClustering",
    "packing": "04-GpuPacking",
    "bestfit": "05-BestFit",
    "fgd": "06-FGD",
}


@dataclass(frozen=True)
class RunRow:
    """One (policy, seed) replay, reduced to what the report needs."""

    policy: str
    seed: int
    alloc_100: float
    alloc_130: float
    frag_100: float
    decision_ms_median: float
    decision_ms_p99: float
    replay_s: float
    alloc_curve: tuple[float, ...]  # by arrival percent 0..130
    migrations: int | None = None  # running pods moved over the replay (anypu-repack only)
    placed: int = 0  # pods placed over the replay

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "policy": self.policy,
            "seed": self.seed,
            "alloc_100": round(self.alloc_100, 3),
            "alloc_130": round(self.alloc_130, 3),
            "frag_100": round(self.frag_100, 3),
            "decision_ms_p99": round(self.decision_ms_p99, 4),
        }
        if self.migrations is not None:
            out["migrations"] = self.migrations
            out["placed"] = self.placed
        return out


@dataclass(frozen=True)
class Reference:
    """Published per-seed values keyed by (workload, policy directory name)."""

    alloc: dict[tuple[str, str], dict[int, np.ndarray]]
    frag: dict[tuple[str, str], dict[int, np.ndarray]]

    def stats(
        self, workload: str, policy: str, level: int, what: str = "alloc", seeds: Sequence[int] = ()
    ) -> tuple[float, float, int] | None:
        """(mean, sd, n) of the published value at ``level`` % arrival over ``seeds`` (all
        published seeds if empty); ``None`` when not published."""
        table = self.alloc if what == "alloc" else self.frag
        name = REFERENCE_NAMES.get(policy)
        per_seed = table.get((workload, name)) if name else None
        if not per_seed:
            return None
        chosen = [s for s in per_seed if not seeds or s in seeds] or list(per_seed)
        values = np.asarray([per_seed[s][level] for s in chosen])
        sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        return float(values.mean()), sd, len(values)


def _read_reference(path: Path) -> dict[tuple[str, str], dict[int, np.ndarray]]:
    out: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    if not path.is_file():
        return out
    with path.open() as fh:
        for row in csv.DictReader(fh):
            curve = np.asarray(
                [float(row[str(k)]) if row.get(str(k)) else math.nan for k in range(131)]
            )
            out.setdefault((row["workload"], row["sc_policy"]), {})[int(row["seed"])] = curve
    return out


def load_reference(reference_dir: Path) -> Reference:
    """The artifact's expected results; empty when the folder is missing."""
    return Reference(
        alloc=_read_reference(reference_dir / "fgd_allocation_dev.csv"),
        frag=_read_reference(reference_dir / "fgd_fragmentation_dev.csv"),
    )


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarise(rows: Sequence[RunRow]) -> list[dict[str, object]]:
    """Mean and sd over seeds per policy, in first-seen policy order."""
    out = []
    for policy in dict.fromkeys(r.policy for r in rows):
        mine = [r for r in rows if r.policy == policy]
        a100, a100_sd = _mean_sd([r.alloc_100 for r in mine])
        a130, a130_sd = _mean_sd([r.alloc_130 for r in mine])
        f100, f100_sd = _mean_sd([r.frag_100 for r in mine])
        out.append(
            {
                "policy": policy,
                "seeds": len(mine),
                "alloc_100": a100,
                "alloc_100_sd": a100_sd,
                "alloc_130": a130,
                "alloc_130_sd": a130_sd,
                "frag_100": f100,
                "frag_100_sd": f100_sd,
                "decision_ms_median": float(np.median([r.decision_ms_median for r in mine])),
                "decision_ms_p99": float(max(r.decision_ms_p99 for r in mine)),
                "replay_s": float(max(r.replay_s for r in mine)),
            }
        )
    return out


def format_table(
    rows: Sequence[RunRow], reference: Reference, workload: str, seeds: Sequence[int]
) -> str:
    """Our mean ± sd next to the published mean ± sd; ``ok`` when within 2 sd of it (for a
    single seed, 2 sd of the published seed-to-seed spread over all its seeds)."""
    head = (
        f"{'policy':<12} {'alloc@100':>13} {'published':>13} {'':>4} {'alloc@130':>13} "
        f"{'published':>13} {'frag@100':>13} {'published':>13} {'dec p50/p99 ms':>15}"
    )
    lines = [f"trace {workload}, seeds {','.join(map(str, seeds))}", head, "-" * len(head)]
    for s in summarise(rows):
        policy = str(s["policy"])
        cells = []
        verdict = ""
        for key, level, what in (("alloc_100", 100, "alloc"), ("alloc_130", 130, "alloc")):
            ref = reference.stats(workload, policy, level, what, seeds)
            cells.append(f"{s[key]:6.2f}±{s[key + '_sd']:<5.2f}")
            cells.append(f"{ref[0]:6.2f}±{ref[1]:<5.2f}" if ref else f"{'—':>13}")
            if level == 100:
                if ref:
                    spread = ref[1]
                    if ref[2] < 2:  # one seed has no spread: use that of all published seeds
                        spread = reference.stats(workload, policy, level, what)[1]  # type: ignore[index]
                    within = abs(cast(float, s[key]) - ref[0]) <= 2 * max(spread, 1e-9)
                    verdict = "ok" if within else "MISS"
                cells.append(f"{verdict:>4}")
        fref = reference.stats(workload, policy, 100, "frag", seeds)
        cells.append(f"{s['frag_100']:6.2f}±{s['frag_100_sd']:<5.2f}")
        cells.append(f"{fref[0]:6.2f}±{fref[1]:<5.2f}" if fref else f"{'—':>13}")
        dec = f"{s['decision_ms_median']:.2f}/{s['decision_ms_p99']:.2f}"
        lines.append(f"{policy:<12} " + " ".join(cells) + f" {dec:>15}")
    return "\n".join(lines)


def write_csv(rows: Sequence[RunRow], path: Path, workload: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "workload",
                "policy",
                "seed",
                "alloc_100",
                "alloc_130",
                "frag_100",
                "decision_ms_median",
                "decision_ms_p99",
                "replay_s",
                *range(131),
            ]
        )
        for r in rows:
            w.writerow(
                [
                    workload,
                    r.policy,
                    r.seed,
                    f"{r.alloc_100:.3f}",
                    f"{r.alloc_130:.3f}",
                    f"{r.frag_100:.3f}",
                    f"{r.decision_ms_median:.4f}",
                    f"{r.decision_ms_p99:.4f}",
                    f"{r.replay_s:.2f}",
                    *(f"{v:.3f}" for v in r.alloc_curve),
                ]
            )


def write_plot(rows: Sequence[RunRow], path: Path, title: str) -> None:
    """GPU allocation vs arrived GPU request, mean over seeds (like the paper's Fig. 9a)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(131)
    for policy in dict.fromkeys(r.policy for r in rows):
        curves = np.asarray([r.alloc_curve for r in rows if r.policy == policy])
        with warnings.catch_warnings():  # levels no replay reached stay NaN (a gap)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(curves, axis=0)
        ax.plot(x, mean, label=policy, linewidth=1.4)
    ax.plot(x, x, color="grey", linestyle=":", linewidth=0.8, label="arrived")
    ax.set_xlim(60, 130)
    ax.set_ylim(55, 100)
    ax.set_xlabel("arrived GPU request (% of cluster GPUs)")
    ax.set_ylabel("GPU allocation ratio (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
