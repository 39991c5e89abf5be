r"""Autoscaling a deployment: the replica count its load asks for.

**Autoscaling** (``max_replicas`` > 0), as Ray Serve scales on ongoing requests and
KServe's autoscaler on concurrency: the replicas' calls, as agents report them
(``LeasedRuns``), give the average number in flight over the last ``WINDOW_S``
seconds, :math:`c = \sum \text{run seconds} / W`. The wanted count is
:math:`\lceil c / T \rceil` (``TARGET_IN_FLIGHT`` per replica, or the deployment's
``target_in_flight``), within ``[max(min_replicas, 1), max_replicas]``. With a
``target_latency_s`` L, the replicas' call times (from arrival at the agent: queue and
run) since the count last changed, once there are ``LATENCY_SAMPLES`` of them and no
replica is warming, give their mean :math:`\bar t`, and the count is at least
:math:`\lceil n \bar t / L \rceil` for the ``n`` replicas that served them (queueing
shrinks as replicas are added; a model slower than L alone is capped by
``max_replicas``, and the event says so). Raised at once, lowered one at a time only
after it has stayed lower for ``scale_down_after_s`` (the deployment's, else
``SchedulerConfig``'s, 30 s).

With ``min_replicas`` 0 a deployment with no call for ``scale_to_zero_after_s`` (the
deployment's, else 60 s) goes to zero replicas; a call then wakes it (the caller scales
it to one and waits for the cold start, which the deployment's events record). Every
change is an event with its reason. No I/O: a mixin of ``SchedulerState`` by way of
``_deployments.DeploymentReplicas``, which places replicas to match the count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from anypu.scheduler._events import Action

if TYPE_CHECKING:
    from anypu.scheduler._deployments import DeploymentRecord
    from anypu.scheduler._leases import LeaseBook
    from anypu.scheduler._state import SchedulerConfig

__all__ = ["LATENCY_SAMPLES", "TARGET_IN_FLIGHT", "WINDOW_S", "DeploymentAutoscaling"]

#: Autoscaling (the module docstring): calls in flight per replica aimed at, and the
#: window they are averaged over.
TARGET_IN_FLIGHT = 0.7
WINDOW_S = 10.0
#: Call times needed since the count last changed before latency moves it.
LATENCY_SAMPLES = 10


class DeploymentAutoscaling:
    """The wanted replica count of autoscaled deployments (the module docstring)."""

    config: SchedulerConfig
    leases: LeaseBook

    def _autoscale(self, record: DeploymentRecord, now: float) -> list[Action]:
        while record.runs and record.runs[0][0] < now - WINDOW_S:
            record.runs.popleft()
        targets = record.autoscaling
        target = targets.target_in_flight or TARGET_IN_FLIGHT
        in_flight = sum(seconds for _, seconds in record.runs) / WINDOW_S
        floor = max(record.min_replicas, 1)
        wanted = min(record.max_replicas, max(floor, math.ceil(in_flight / target)))
        current = record.replicas
        if current == 0:
            return []  # asleep: a call wakes it
        why_up = (
            f"{in_flight:.2f} calls in flight over {WINDOW_S:g} s (target {target:g} a replica)"
        )
        latency = self._latency_wanted(record)
        if latency is not None and latency[0] > wanted:
            wanted, why_up = min(record.max_replicas, latency[0]), latency[1]
        down_after = targets.scale_down_after_s or self.config.scale_down_after_s
        zero_after = targets.scale_to_zero_after_s or self.config.scale_to_zero_after_s
        idle = now - record.last_call >= zero_after
        # A replica still warming is not idleness: it has not had the chance of a call.
        if record.min_replicas == 0 and idle and not record.warming:
            wanted = 0
            why = f"no call for {now - record.last_call:.0f} s"
        elif wanted > current:
            why = why_up
        elif wanted < current:
            if record.lower_since is None:
                record.lower_since = now
            if now - record.lower_since < down_after:
                return []
            wanted = max(wanted, current - 1)  # one at a time, as load settles
            why = f"{in_flight:.2f} calls in flight for {down_after:g} s"
        else:
            record.lower_since = None
            if latency is not None and latency[0] > record.max_replicas == current:
                self._note_capped(record, now, latency[1])
            return []
        record.event(now, f"{current} → {wanted} replica(s): {why}")
        record.replicas = wanted
        record.lower_since = None
        record.scaled_at = now
        return [record.persisted()]

    def _latency_wanted(self, record: DeploymentRecord) -> tuple[int, str] | None:
        """The count the latency target asks for, and why (None: no target, or too few
        call times since the count last changed, or a replica still warming)."""
        goal = record.autoscaling.target_latency_s
        if not goal or record.warming:
            return None
        recent = [seconds for at, seconds in record.runs if at >= record.scaled_at]
        if len(recent) < LATENCY_SAMPLES:
            return None
        mean = sum(recent) / len(recent)
        serving = max(1, len(self.leases.of_deployment(record.name)))
        why = (
            f"calls took {mean * 1000:.0f} ms on average on {serving} replica(s)"
            f" (target {goal * 1000:g} ms)"
        )
        return math.ceil(serving * mean / goal - 1e-9), why

    def _note_capped(self, record: DeploymentRecord, now: float, why: str) -> None:
        """Say once per count that the latency target asks for more than max_replicas."""
        text = f"at max_replicas {record.max_replicas}: {why}; raise max_replicas for more"
        last = record.events[-1].partition(" ")[2] if record.events else ""
        if not last.startswith(f"at max_replicas {record.max_replicas}:"):
            record.event(now, text)
