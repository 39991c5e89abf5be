"""What the scheduler holds, summarised for people and for Prometheus.

Two halves:

- Pure summaries over plain records (``NodeInfo`` and the placements of active jobs):
  capacity and reservations by tier and device kind, and a fragmentation ratio. The
  dashboard, ``/metrics`` and ``anypu status`` all use them, so the three never disagree.
- ``SchedulerMetrics``: a private prometheus-client registry. Gauges are read from the
  service's state at scrape time by a custom collector (nothing to keep in sync);
  histograms and counters of transitions are fed by an observer the service calls with
  every batch of actions. Label values come from small fixed sets (tier, kind, vendor,
  state, outcome, solver) and node ids; job ids only on the per-job memory of running
jobs (a series lives while its job runs).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import prometheus_client as prom
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from anypu.comm import CALL_SECONDS_BUCKETS, ThrottleCollector, watch_gateway
from anypu.devices import Device
from anypu.placement import TIERS
from anypu.protos.messages import (
    ClusterUsage,
    DeviceReservation,
    JobInfo,
    NodeInfo,
    PlacementInfo,
    UsageRow,
)
from anypu.scheduler._state import PersistJob, SchedulerState

__all__ = [
    "DEADLINE_OUTCOMES",
    "NODE_STATES",
    "ClusterView",
    "SchedulerMetrics",
    "cluster_usage",
    "fragmentation",
    "read_view",
    "reserved_slices",
    "usage_by_tier_kind",
]

NODE_STATES = ("ready", "lost", "left", "disconnected")
DEADLINE_OUTCOMES = ("met", "missed", "unreachable")
LIVE_STATES = ("pending", "placed", "running")
SlotKey = tuple[str, str, int]  # (node_id, device_id, slice_index)


# ---------------------------------------------------------------- pure summaries


def reserved_slices(active: Iterable[PlacementInfo | None]) -> set[SlotKey]:
    """The slices bound to at least one live job (several may queue on one slice)."""
    return {(p.node_id, p.device_id, p.slice_index) for p in active if p is not None}


def shares_held(active: Iterable[PlacementInfo | None]) -> dict[tuple[str, str], tuple[int, int]]:
    """Per (node, device): the memory and milli live jobs reserve of it (shared devices)."""
    held: dict[tuple[str, str], tuple[int, int]] = {}
    for p in active:
        if p is not None and p.milli:
            memory, milli = held.get((p.node_id, p.device_id), (0, 0))
            held[(p.node_id, p.device_id)] = (memory + p.memory_bytes, milli + p.milli)
    return held


def _reserved(
    node_id: str,
    d: Device,
    taken: set[SlotKey],
    held: dict[tuple[str, str], tuple[int, int]],
) -> tuple[int, int, float]:
    """A device's busy slices (seats), and the memory and throughput reserved of it:
    busy slices' shares, or a shared device's reservations."""
    busy = sum((node_id, d.device_id, i) in taken for i in range(d.slices))
    if d.shared:
        memory, milli = held.get((node_id, d.device_id), (0, 0))
        return busy, memory, d.tflops * milli / 1000
    return busy, d.slice_memory_bytes * busy, d.slice_tflops * busy


def usage_by_tier_kind(
    nodes: Sequence[NodeInfo], active: Iterable[PlacementInfo | None]
) -> list[UsageRow]:
    """One row per (tier, device kind) present on ready nodes, tiers in network order."""
    active = list(active)
    taken = reserved_slices(active)
    held = shares_held(active)
    rows: dict[tuple[str, str], list[float]] = {}
    for node in nodes:
        if node.state != "ready":
            continue
        for d in node.devices:
            busy, memory, tflops = _reserved(node.node_id, d, taken, held)
            acc = rows.setdefault((node.tier, d.kind), [0] * 8)
            acc[0] += 1
            acc[1] += d.simulated
            acc[2] += d.slices
            acc[3] += busy
            acc[4] += d.memory_bytes
            acc[5] += memory
            acc[6] += d.tflops
            acc[7] += tflops
    order = {t: i for i, t in enumerate(TIERS)}
    return [
        UsageRow(
            tier,
            kind,
            int(a[0]),
            int(a[1]),
            int(a[2]),
            int(a[3]),
            int(a[4]),
            int(a[5]),
            float(a[6]),
            float(a[7]),
        )
        for (tier, kind), a in sorted(rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    ]


def fragmentation(nodes: Sequence[NodeInfo], active: Iterable[PlacementInfo | None]) -> float:
    """Share of free device memory stranded on partly reserved devices, 0..1.

    Free memory on a device whose other slices are taken cannot host a job that needs the
    whole device; 0 means every free byte sits on a wholly free device, 1 means none does.
    With no free memory at all there is nothing to fragment: 0.
    """
    active = list(active)
    taken = reserved_slices(active)
    held = shares_held(active)
    free = stranded = 0
    for node in nodes:
        if node.state != "ready":
            continue
        for d in node.devices:
            busy, memory, _ = _reserved(node.node_id, d, taken, held)
            free_here = (
                d.memory_bytes - memory if d.shared else d.slice_memory_bytes * (d.slices - busy)
            )
            free += free_here
            if busy:
                stranded += free_here
    return stranded / free if free else 0.0


def cluster_usage(
    nodes: Sequence[NodeInfo], active: Iterable[PlacementInfo | None]
) -> ClusterUsage:
    """Usage rows, fragmentation and per-device reservations: the ``Usage`` call's answer."""
    active = list(active)
    taken = Counter((n, d) for n, d, _ in reserved_slices(active))
    reserved = tuple(DeviceReservation(n, d, count) for (n, d), count in sorted(taken.items()))
    return ClusterUsage(
        tuple(usage_by_tier_kind(nodes, active)), fragmentation(nodes, active), reserved
    )


# ---------------------------------------------------------------- a consistent read


@dataclass(frozen=True)
class ClusterView:
    """Everything the dashboard and a scrape need, read under the service's lock at once."""

    now: float
    nodes: tuple[NodeInfo, ...]
    live_jobs: tuple[JobInfo, ...]  # pending, placed and running, oldest first
    decisions: dict[str, int]
    #: Jobs with a deadline since start by (tier, met | missed | unreachable).
    deadlines: dict[tuple[str, str], int]
    solver: str
    solve_seconds: float
    #: The network placement costs with: declared, refitted to measured round trips
    #: (``_measured_network``; its edges say what was declared and how old the sample).
    network: object | None
    declared_network: object | None = None

    @property
    def active(self) -> list[PlacementInfo | None]:
        return [j.placement for j in self.live_jobs if j.state in ("placed", "running")]

    @property
    def pending(self) -> list[JobInfo]:
        return [j for j in self.live_jobs if j.state == "pending"]

    def job_counts(self) -> dict[str, int]:
        counts = Counter(j.state for j in self.live_jobs)
        return {state: counts.get(state, 0) for state in LIVE_STATES}


def _read(state: SchedulerState, now: float) -> ClusterView:
    live = [state.jobs[j] for j in (*state.pending, *state.active)]
    live.sort(key=lambda j: j.submitted_at)
    held = state.reservations()
    last = state.last_plan
    return ClusterView(
        now=now,
        nodes=tuple(n.info(now, held.get(n.node_id, ())) for n in state.nodes.values()),
        live_jobs=tuple(j.info() for j in live),
        decisions=dict(state.decisions),
        deadlines=dict(state.deadlines),
        solver=last.solver if last else "",
        solve_seconds=last.solve_seconds if last else 0.0,
        network=state.measured.fit(state.nodes.values(), now),
        declared_network=state.network,
    )


def read_view(service: Any) -> ClusterView:
    """One consistent ``ClusterView`` of a ``SchedulerService``."""
    return service.inspect(_read)


# ---------------------------------------------------------------- Prometheus

_SOLVE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_ERROR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 100)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)


class _StateCollector(Collector):
    """Gauges read from the service at scrape time, so they can never drift from it."""

    def __init__(self, service: Any, transitions: _Transitions) -> None:
        self.service = service
        self.transitions = transitions

    def collect(self) -> Iterator[Metric]:
        view = read_view(self.service)
        nodes = GaugeMetricFamily(
            "anypu_nodes", "Nodes by tier and state.", labels=["tier", "state"]
        )
        counts = Counter((n.tier, n.state) for n in view.nodes)
        for tier in TIERS:
            for state in NODE_STATES:
                nodes.add_metric([tier, state], counts.get((tier, state), 0))
        yield nodes

        devices = GaugeMetricFamily(
            "anypu_devices",
            "Devices on ready nodes by tier, kind, vendor and whether they are simulated.",
            labels=["tier", "kind", "vendor", "simulated"],
        )
        by_device = Counter(
            (n.tier, d.kind, d.vendor, str(d.simulated).lower())
            for n in view.nodes
            if n.state == "ready"
            for d in n.devices
        )
        for labels, count in sorted(by_device.items()):
            devices.add_metric(list(labels), count)
        yield devices
        yield from _usage_families(usage_by_tier_kind(view.nodes, view.active))
        yield GaugeMetricFamily(
            "anypu_fragmentation_ratio",
            "Share of free device memory stranded on partly reserved devices (0..1).",
            value=fragmentation(view.nodes, view.active),
        )

        jobs = GaugeMetricFamily("anypu_jobs", "Live jobs by state.", labels=["state"])
        for state, count in view.job_counts().items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily(
            "anypu_queue_depth",
            "Jobs waiting to be placed, unschedulable ones included.",
            value=len(view.pending),
        )
        unschedulable = sum(j.unschedulable for j in view.pending)
        yield GaugeMetricFamily(
            "anypu_jobs_unschedulable",
            "Pending jobs that no device can currently hold.",
            value=unschedulable,
        )
        decisions = CounterMetricFamily(
            "anypu_placement_decisions",
            "Per-job outcomes of placement rounds: placed, unschedulable (counted every round"
            " a job stays so), deferred (fits somewhere, but not this round).",
            labels=["outcome"],
        )
        for outcome, count in sorted(view.decisions.items()):
            decisions.add_metric([outcome], count)
        yield decisions
        deadlines = CounterMetricFamily(
            "anypu_deadline_jobs",
            "Jobs with a deadline: met or missed (submit to result, by the tier they ran"
            " on) and unreachable (failed at once: no device predicted in time; by the tier"
            " of the best prediction).",
            labels=["tier", "outcome"],
        )
        for tier in TIERS:
            for outcome in DEADLINE_OUTCOMES:
                deadlines.add_metric([tier, outcome], view.deadlines.get((tier, outcome), 0))
        yield deadlines

        age = GaugeMetricFamily(
            "anypu_node_heartbeat_age_seconds",
            "Seconds since each node's last message.",
            labels=["node", "tier"],
        )
        for n in view.nodes:
            age.add_metric([n.node_id, n.tier], n.last_heartbeat_age_s)
        yield age
        rtt = GaugeMetricFamily(
            "anypu_node_rtt_seconds",
            "Round trip on each node's agent stream (heartbeat echoes, last 64): median"
            " and 95th percentile; absent until its agent has measured one.",
            labels=["node", "tier", "quantile"],
        )
        for n in view.nodes:
            if n.rtt_age_s >= 0:
                rtt.add_metric([n.node_id, n.tier, "0.5"], n.rtt_p50_s)
                rtt.add_metric([n.node_id, n.tier, "0.95"], n.rtt_p95_s)
        yield rtt
        yield from _readings_families(view.nodes)
        deployments = self.service.deployments()
        yield _replicas_family(deployments)
        yield from _cold_start_families(deployments)
        yield _traffic_family(deployments)
        yield _caller_times_family(deployments)
        yield GaugeMetricFamily(
            "anypu_placement_rate",
            "Jobs placed per second over the last minute.",
            value=self.transitions.placement_rate(view.now),
        )


def _replicas_family(deployments: Sequence[Any]) -> Metric:
    family = GaugeMetricFamily(
        "anypu_deployment_replicas",
        "Replicas of each deployment: wanted, ready (serving calls) and warming (placed"
        " and loading the model).",
        labels=["deployment", "state"],
    )
    for info in deployments:
        warming = sum(r.state == "warming" for r in info.replicas)
        family.add_metric([info.name, "wanted"], info.replicas_wanted)
        family.add_metric([info.name, "ready"], len(info.ready))
        family.add_metric([info.name, "warming"], warming)
    return family


def _caller_times_family(deployments: Sequence[Any]) -> Metric:
    family = HistogramMetricFamily(
        "anypu_deployment_call_seconds",
        "Calls to each deployment end to end where its callers stand (SDK clients,"
        " gateways at agents and the scheduler), as they reported them, since the"
        " scheduler started.",
        labels=["deployment"],
    )
    for info in deployments:
        if not info.caller_buckets:
            continue
        cumulative, running = [], 0
        bounds = [*(f"{b:g}" for b in CALL_SECONDS_BUCKETS), "+Inf"]
        counts = info.caller_buckets
        for i, bound in enumerate(bounds):
            running += counts[i] if i < len(counts) else 0
            cumulative.append((bound, running))
        family.add_metric([info.name], cumulative, sum_value=info.caller_seconds)
    return family


def _traffic_family(deployments: Sequence[Any]) -> Metric:
    family = GaugeMetricFamily(
        "anypu_deployment_site_calls",
        "Calls to each deployment over the last minute, by the site callers reported them"
        " from (SDK clients' origins, gateway agents' sites): what its replicas follow.",
        labels=["deployment", "site"],
    )
    for info in deployments:
        for site, calls in info.traffic:
            family.add_metric([info.name, site], calls)
    return family


def _cold_start_families(deployments: Sequence[Any]) -> Iterator[Metric]:
    count = CounterMetricFamily(
        "anypu_deployment_cold_starts",
        "Times a call woke a deployment from zero replicas, since the scheduler started.",
        labels=["deployment"],
    )
    last = GaugeMetricFamily(
        "anypu_deployment_last_cold_start_seconds",
        "How long the last cold start took, from the call that woke it to a replica ready.",
        labels=["deployment"],
    )
    for info in deployments:
        count.add_metric([info.name], info.cold_starts)
        if info.cold_starts:
            last.add_metric([info.name], info.last_cold_start_s)
    yield count
    yield last


def _readings_families(nodes: Sequence[NodeInfo]) -> Iterator[Metric]:
    """What each ready node's agent measured on its last heartbeat: per device, and per
    running job (a job id label lives only while the job runs)."""
    busy = GaugeMetricFamily(
        "anypu_device_utilisation",
        "Busy fraction of each device (0..1): the vendor's reading when measured=true,"
        " else the share of its slices running a job.",
        labels=["node", "device", "measured"],
    )
    used = GaugeMetricFamily(
        "anypu_device_memory_used_bytes",
        "Memory in use on each device as its vendor reads it (measured devices only).",
        labels=["node", "device"],
    )
    per_job = GaugeMetricFamily(
        "anypu_job_memory_used_bytes",
        "Each running job's own memory on its device: the vendor's per-process reading, or"
        " its worker process's resident memory on CPU and simulated devices.",
        labels=["job", "node", "device"],
    )
    reserved = GaugeMetricFamily(
        "anypu_device_reserved_memory_bytes",
        "Memory the placed and running jobs reserve of each shared device.",
        labels=["node", "device"],
    )
    reserved_milli = GaugeMetricFamily(
        "anypu_device_reserved_milli",
        "Thousandths of each shared device's compute its placed and running jobs reserve.",
        labels=["node", "device"],
    )
    per_job_reserved = GaugeMetricFamily(
        "anypu_job_reserved_memory_bytes",
        "What each placed or running job reserves of its shared device.",
        labels=["job", "node", "device"],
    )
    for n in nodes:
        if n.state != "ready":
            continue
        for u in n.usage:
            busy.add_metric([n.node_id, u.device_id, str(u.measured).lower()], u.utilisation)
            if u.measured:
                used.add_metric([n.node_id, u.device_id], u.memory_used_bytes)
        for j in n.job_usage:
            per_job.add_metric([j.job_id, n.node_id, j.device_id], j.memory_used_bytes)
        for r in n.reservations:
            per_job_reserved.add_metric([r.job_id, n.node_id, r.device_id], r.memory_bytes)
        for d in n.devices:
            if d.shared:
                memory, milli = n.reserved_on(d.device_id)
                reserved.add_metric([n.node_id, d.device_id], memory)
                reserved_milli.add_metric([n.node_id, d.device_id], milli)
    yield busy
    yield used
    yield per_job
    yield reserved
    yield reserved_milli
    yield per_job_reserved


def _usage_families(rows: list[UsageRow]) -> Iterator[Metric]:
    spec = (
        ("anypu_device_memory_bytes", "Device memory on ready nodes", "memory_bytes"),
        ("anypu_device_slices", "Device slices on ready nodes", "slices"),
        ("anypu_device_tflops", "Device compute (TFLOPS) on ready nodes", "tflops"),
    )
    for name, text, field in spec:
        family = GaugeMetricFamily(
            name, f"{text}, reserved by live jobs or free.", labels=["tier", "kind", "state"]
        )
        for row in rows:
            reserved = getattr(row, f"reserved_{field}")
            family.add_metric([row.tier, row.kind, "reserved"], reserved)
            family.add_metric([row.tier, row.kind, "free"], getattr(row, field) - reserved)
        yield family


class _Transitions:
    """Histograms and counters fed with every batch of actions the service applies."""

    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.solve = prom.Histogram(
            "anypu_placement_solve_seconds",
            "Wall time of one placement round, by the solver that produced the plan.",
            ["solver"],
            buckets=_SOLVE_BUCKETS,
            registry=registry,
        )
        self.queue_wait = prom.Histogram(
            "anypu_job_queue_wait_seconds",
            "Time from (re)entering the queue to being placed, by the tier placed on.",
            ["tier"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.latency = prom.Histogram(
            "anypu_job_latency_seconds",
            "Submit to result of succeeded jobs, by the tier they ran on.",
            ["tier"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.prediction_error = prom.Histogram(
            "anypu_compute_prediction_error_ratio",
            "|predicted − measured| / measured run time of succeeded placed jobs, by where"
            " the prediction came from (measured: this model's runs on that device model;"
            " learned: other models' runs there; estimate: FLOPs over declared throughput)"
            " and the tier.",
            ["source", "tier"],
            buckets=_ERROR_BUCKETS,
            registry=registry,
        )
        self.finished = prom.Counter(
            "anypu_jobs_finished",
            "Jobs that reached a terminal state, by state and the tier they last ran on.",
            ["state", "tier"],
            registry=registry,
        )
        self._last_plan: object | None = None
        # Terminal jobs since start, for the dashboard (a prometheus Counter is write-only).
        self.finished_counts: Counter[str] = Counter()
        self._queued_at: dict[str, float] = {}
        # Scrapes read this while the service's thread appends: it gets its own lock.
        self._placed_at: deque[float] = deque(maxlen=100_000)
        self._placed_lock = threading.Lock()

    def placement_rate(self, now: float, window: float = 60.0) -> float:
        with self._placed_lock:
            recent = sum(1 for t in self._placed_at if now - t <= window)
        return recent / window

    def observe(self, state: SchedulerState, actions: list, now: float) -> None:
        if state.last_plan is not None and state.last_plan is not self._last_plan:
            self._last_plan = state.last_plan
            self.solve.labels(state.last_plan.solver or "none").observe(
                state.last_plan.solve_seconds
            )
        for action in actions:
            if not isinstance(action, PersistJob) or not action.transition:
                continue
            job, to = action.job, action.transition
            tier = job.placement.tier if job.placement is not None else "none"
            if to == "pending":
                self._queued_at[job.job_id] = now
            elif to == "placed":
                since = self._queued_at.pop(job.job_id, job.submitted_at)
                self.queue_wait.labels(tier).observe(max(0.0, now - since))
                with self._placed_lock:
                    self._placed_at.append(now)
            elif to in ("succeeded", "failed", "cancelled"):
                self._queued_at.pop(job.job_id, None)
                self.finished.labels(to, tier).inc()
                self.finished_counts[to] += 1
                if to == "succeeded":
                    self.latency.labels(tier).observe(max(0.0, job.finished_at - job.submitted_at))
                    if not action.leased:  # a call under a lease reuses a prediction
                        self._prediction(job, tier)

    def _prediction(self, job: Any, tier: str) -> None:
        p, run = job.placement, job.outcome.run_seconds
        if p is None or run <= 0 or "compute" not in p.terms:
            return
        error = abs(p.terms["compute"] - run) / run
        self.prediction_error.labels(p.compute_from or "estimate", tier).observe(error)


class _StateFolderCollector(Collector):
    """What the state folder holds and what retention collected (see ``_retention``)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "anypu_state_folder_bytes",
            "Bytes the scheduler's state folder holds: the SQLite database with its log,"
            " and the blobs (model artifacts, large inputs and outputs).",
            labels=["part"],
        )
        size.add_metric(["database"], self.service.store.bytes_on_disk())
        size.add_metric(["blobs"], self.service.blobs.bytes)
        yield size
        collector = self.service.collector
        collected = CounterMetricFamily(
            "anypu_state_collected",
            "What retention deleted: outputs of succeeded jobs, finished job records,"
            " unreferenced blobs.",
            labels=["what"],
        )
        for what, count in collector.collected.items():
            collected.add_metric([what], count)
        yield collected
        yield CounterMetricFamily(
            "anypu_probe_bytes",
            "Bytes of agents' bandwidth probes received (what measuring the network cost).",
            value=self.service.probe_bytes,
        )
        yield CounterMetricFamily(
            "anypu_state_collected_blob_bytes",
            "Bytes of blobs retention deleted.",
            value=collector.collected_bytes,
        )


class SchedulerMetrics:
    """Prometheus metrics of one ``SchedulerService``, in a registry of their own."""

    def __init__(self, service: Any, throttle: Any = None) -> None:
        self.registry = prom.CollectorRegistry(auto_describe=False)
        self.transitions = _Transitions(self.registry)
        self.registry.register(_StateCollector(service, self.transitions))
        self.registry.register(_StateFolderCollector(service))
        if throttle is not None:
            self.registry.register(ThrottleCollector(throttle))
        state = service.state
        service.observers.append(lambda actions, now: self.transitions.observe(state, actions, now))

    def watch_inference(self, gateway: Any) -> None:
        """Count ``gateway``'s requests (``anypu.comm.InferenceGateway.answered``) and
        time its inferences end to end (its throttle is the scheduler's, counted once)."""
        watch_gateway(self.registry, gateway, "the scheduler")

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return prom.generate_latest(self.registry)
