"""The strategy registry: who places a round, by ``PlacementConfig.policy``.

One entry per name of ``POLICY_NAMES``: the cost model (``_solver``) and every GPU-sharing
policy of ``placement.gpushare`` (``_live_policy``, which hands what they do not place to
the cost model). ``plan`` is the one entry point the scheduler and the benchmarks call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from anypu.placement._config import POLICY_NAMES, PlacementConfig
from anypu.placement._deadlines import plan_with_deadlines
from anypu.placement._earmarks import plan_with_earmarks
from anypu.placement._framework import Strategy
from anypu.placement._live_policy import TracePolicyStrategy
from anypu.placement._model import ClusterSnapshot, JobRequest, Plan
from anypu.placement._solver import CostStrategy

__all__ = ["STRATEGIES", "plan"]


def _strategy(name: str) -> Strategy:
    return CostStrategy() if name == "cost" else TracePolicyStrategy(name)


#: ``policy`` name -> the strategy that places its rounds.
STRATEGIES: Mapping[str, Strategy] = MappingProxyType({n: _strategy(n) for n in POLICY_NAMES})


def _validate(jobs: Sequence[JobRequest]) -> None:
    seen: set[str] = set()
    for job in jobs:
        if job.job_id in seen:
            raise ValueError(f"job {job.job_id!r} appears twice in one placement batch")
        seen.add(job.job_id)
        for name in ("flops", "memory_bytes", "input_bytes", "output_bytes", "artifact_bytes"):
            value = getattr(job, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"job {job.job_id!r}: {name} must be finite and >= 0, got {value}")
        if job.deadline_s is not None and math.isnan(job.deadline_s):
            raise ValueError(f"job {job.job_id!r}: deadline_s must be a number, got nan")
        for name in ("measured_seconds", "learned_seconds"):
            for model, secs in getattr(job, name).items():
                if not (secs >= 0 and math.isfinite(secs)):
                    raise ValueError(
                        f"job {job.job_id!r}: {name}[{model!r}] must be >= 0, got {secs}"
                    )


def plan(
    snapshot: ClusterSnapshot,
    jobs: Sequence[JobRequest],
    *,
    config: PlacementConfig | None = None,
) -> Plan:
    """Place ``jobs`` on the slices of ``snapshot`` with the strategy ``config.policy``
    names. Pure: no I/O, no clock but timing.

    A job no device can take appears in ``Plan.unschedulable`` with every node's reason
    (and in ``Plan.unresolvable`` when waiting cannot help); it is never an exception.
    ``Plan.solver`` says who placed: ``single``, ``greedy``, ``cp-sat:…`` (the cost
    model, ``_solver``) or ``policy:NAME`` (a GPU-sharing policy, ``_live_policy``).
    A job held back for room long enough has a device set aside for it (``_earmarks``;
    ``Plan.earmarks``, which the next round's snapshot is to carry). A job with a
    deadline goes only where it is predicted to meet it, or is ``Plan.deadline_unreachable``
    (``_deadlines``).
    """
    config = config or PlacementConfig()
    _validate(jobs)
    strategy = STRATEGIES[config.policy].plan

    def within_deadlines(
        snapshot: ClusterSnapshot, jobs: Sequence[JobRequest], config: PlacementConfig
    ) -> Plan:
        return plan_with_deadlines(snapshot, jobs, config, strategy)

    return plan_with_earmarks(snapshot, jobs, config, within_deadlines)
