"""The placement framework: the columnar cluster table and the extension points.

Placement follows the Kubernetes scheduler framework: filter plugins say why a device
cannot take a job, score plugins put named terms (in seconds) on the devices that can,
and a strategy picks (the cost model with CP-SAT, or a GPU-sharing policy). Plugins see
the cluster as numpy columns (``ClusterTable``) so one call scores every device for a
job; a batch of 1,000 jobs over 10,000 devices is then 1,000 vector passes, not ten
million Python calls. Which plugins run, and which strategy, is ``PlacementConfig``'s.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from anypu.devices import Device
from anypu.placement._model import ClusterSnapshot, DeviceView, JobRequest, NodeView, Plan
from anypu.placement._network import NetworkCosts

if TYPE_CHECKING:
    from anypu.placement._config import PlacementConfig

__all__ = [
    "DEFAULT_EFFICIENCY",
    "PRECISION_RELATIVE",
    "PREDICTED_TERMS",
    "TERMS",
    "ClusterTable",
    "DeviceIndex",
    "FilterPlugin",
    "PlanContext",
    "ScorePlugin",
    "Strategy",
    "in_report_order",
    "predicted_seconds",
]

#: Fraction of peak throughput a typical model reaches, by device kind. Data, not code:
#: override per deployment through ``PlacementConfig.efficiency``.
DEFAULT_EFFICIENCY: Mapping[str, float] = MappingProxyType(
    {"cpu": 0.5, "gpu": 0.35, "npu": 0.3, "tpu": 0.4, "xpu": 0.3, "mps": 0.3}
)

#: The objective's terms, in the order they are reported.
TERMS = ("compute", "transfer", "warm", "queue", "fragmentation")

#: The terms that are time the job takes, from submission to outputs back: what a
#: placement's ``predicted_seconds`` sums (the fragmentation tie-breaker is not).
PREDICTED_TERMS = ("compute", "transfer", "warm", "queue")


def predicted_seconds(terms: Mapping[str, float]) -> float:
    """Predicted completion of a placement with these terms (``PREDICTED_TERMS``)."""
    return sum(terms.get(k, 0.0) for k in PREDICTED_TERMS)


def in_report_order(terms: Mapping[str, float]) -> dict[str, float]:
    """A placement's terms as reported: ``TERMS`` first, then any a plugin of the config
    added (in its order), then ``slo_violation``."""
    ordered = {k: terms[k] for k in TERMS if k in terms}
    ordered.update((k, v) for k, v in terms.items() if k not in ordered and k != "slo_violation")
    if "slo_violation" in terms:
        ordered["slo_violation"] = terms["slo_violation"]
    return ordered


#: Which devices a score is wanted for: an index array, or ``slice(None)`` for all of
#: them (a view, no gather: the common case in a round).
DeviceIndex = np.ndarray | slice


def _codes(values: Sequence[str]) -> tuple[list[str], dict[str, int], NDArray[np.int64]]:
    names: list[str] = []
    index: dict[str, int] = {}
    codes = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        code = index.get(v)
        if code is None:
            code = index[v] = len(names)
            names.append(v)
        codes[i] = code
    return names, index, codes


class _Layout:
    """The columns that depend only on which devices sit on which nodes, where.

    A table is rebuilt every round but the layout rarely changes (a node joining or
    leaving does it), and building it is most of a one-job round on a big cluster, so
    the last few layouts are kept, keyed by the nodes' ids, tiers, sites and the identity
    of their device descriptions (held by the layout, so no id is reused while cached).
    """

    def __init__(self, nodes: tuple[NodeView, ...]) -> None:
        self.node_index: dict[str, int] = {}
        for i, n in enumerate(nodes):
            if n.node_id in self.node_index:
                raise ValueError(f"snapshot lists node {n.node_id!r} twice; node ids are unique")
            self.node_index[n.node_id] = i
        self.tiers, self.tier_index, self.node_tier = _codes([n.tier for n in nodes])
        self.sites, self.site_index, self.node_site = _codes([n.site for n in nodes])
        self.device_objects = [dv.device for n in nodes for dv in n.devices]
        devices = self.device_objects
        n_dev = len(devices)
        self.dev_node = np.fromiter(
            (i for i, n in enumerate(nodes) for _ in n.devices), np.int64, n_dev
        )
        self.kinds, self.kind_index, self.dev_kind = _codes([d.kind for d in devices])
        self.models, self.model_index, self.dev_model = _codes([d.model for d in devices])
        self.dev_slices = np.maximum(np.fromiter((d.slices for d in devices), np.int64, n_dev), 1)
        self.dev_slices_list: list[int] = self.dev_slices.tolist()
        memory = np.fromiter((d.memory_bytes for d in devices), np.int64, n_dev)
        self.dev_memory = memory.astype(float)
        tflops = np.fromiter((d.tflops for d in devices), float, n_dev)
        self.dev_shared = np.fromiter((d.shared for d in devices), bool, n_dev)
        # Same arithmetic as Device.slice_memory_bytes / slice_tflops, over all devices:
        # a seat of a shared device owns nothing fixed, so a job alone there has it all.
        self.dev_share_divisor = np.where(self.dev_shared, 1, self.dev_slices)
        self.dev_slice_memory = (memory // self.dev_share_divisor).astype(float)
        self.dev_slice_tflops = tflops / self.dev_share_divisor
        self.dev_site = self.node_site[self.dev_node] if devices else np.zeros(0, np.int64)
        self.dev_multi_slice = self.dev_slices > 1
        # 0 for a memoryless device: only a job needing no memory passes the filter there.
        self.dev_inv_slice_memory = np.divide(
            1.0,
            self.dev_slice_memory,
            out=np.zeros(n_dev),
            where=self.dev_slice_memory > 0,
        )
        self._lacking: list[tuple[int, frozenset[str]]] | None = None
        self._columns: dict[object, NDArray[np.float64]] = {}
        self._memo: dict[str, Any] = {}
        n_slices = int(self.dev_slices.sum())
        self.slice_dev = np.repeat(np.arange(n_dev, dtype=np.int64), self.dev_slices)
        self.dev_first_slice = np.cumsum(self.dev_slices) - self.dev_slices
        self.slice_pos = np.arange(n_slices, dtype=np.int64) - self.dev_first_slice[self.slice_dev]
        for array in vars(self).values():
            if isinstance(array, np.ndarray):
                array.flags.writeable = False  # shared by every table built from it

    def memo(self, key: str, build: Callable[[], Any]) -> Any:
        """What ``build()`` makes of this layout, built once (a strategy's own per-layout
        structures; they must not change afterwards)."""
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = build()
        return hit

    def column(self, key: object, of: Callable[[Device], float]) -> NDArray[np.float64]:
        """``of(device)`` for every device, computed once per layout and ``key`` (read-only)."""
        hit = self._columns.get(key)
        if hit is None:
            hit = np.fromiter((of(d) for d in self.device_objects), float, len(self.device_objects))
            hit.flags.writeable = False
            self._columns[key] = hit
        return hit

    def lacking_operators(self) -> list[tuple[int, frozenset[str]]]:
        """``(device index, operators its backend lacks)`` for the devices whose agent
        says so (``extra["lacks_operators"]``); computed once per layout."""
        if self._lacking is None:
            self._lacking = [
                (d, device.lacking_operators)
                for d, device in enumerate(self.device_objects)
                if device.lacking_operators
            ]
        return self._lacking

    def precision_scale(self, precision: str) -> NDArray[np.float64]:
        """Per device: its throughput at ``precision`` over ``Device.tflops`` (the
        figure of its own ``tflops_precision``). Computed once per layout and precision:
        the devices are the layout's."""
        return self.column(("precision", precision), lambda d: _scale(d, precision))


#: Dense throughput at each precision relative to fp32, for a device that publishes no
#: figure at the precision a model runs in: what accelerators without matrix engines
#: give (half precision twice fp32, int8 twice that). A device's own figures
#: (``extra["tflops_<precision>"]``) always win; a CPU is taken at its measured fp32
#: rate for every precision (half precision is emulated or no faster on most).
PRECISION_RELATIVE: Mapping[str, float] = MappingProxyType(
    {"fp64": 0.5, "fp32": 1.0, "tf32": 1.0, "fp16": 2.0, "bf16": 2.0, "fp8": 4.0, "int8": 4.0}
)


def _scale(device: Device, precision: str) -> float:
    own = device.extra.get("tflops_precision", "fp32")
    if precision == own or device.tflops <= 0:
        return 1.0
    figure = device.extra.get(f"tflops_{precision}")
    if figure is not None:
        try:
            value = float(figure)
        except ValueError:
            value = 0.0
        if value > 0 and math.isfinite(value):
            return value / device.tflops
        # A malformed or zero figure: estimate as for a device without one.
    if device.kind == "cpu":
        return 1.0
    return PRECISION_RELATIVE.get(precision, 1.0) / PRECISION_RELATIVE.get(own, 1.0)


def _layout_key(nodes: tuple[NodeView, ...]) -> tuple[object, ...]:
    return tuple((n.node_id, n.tier, n.site, *[id(dv.device) for dv in n.devices]) for n in nodes)


_LAYOUTS: OrderedDict[tuple[object, ...], _Layout] = OrderedDict()
_LAYOUTS_KEPT = 4
_layouts_lock = threading.Lock()


def _layout(nodes: tuple[NodeView, ...]) -> _Layout:
    key = _layout_key(nodes)
    with _layouts_lock:
        layout = _LAYOUTS.get(key)
        if layout is not None:
            _LAYOUTS.move_to_end(key)
            return layout
    layout = _Layout(nodes)
    with _layouts_lock:
        _LAYOUTS[key] = layout
        while len(_LAYOUTS) > _LAYOUTS_KEPT:
            _LAYOUTS.popitem(last=False)
    return layout


_LAYOUT_COLUMNS = (
    "node_index",
    *("tiers", "tier_index", "node_tier", "sites", "site_index", "node_site"),
    *("kinds", "kind_index", "dev_kind", "models", "model_index", "dev_model"),
    *("dev_node", "dev_slices", "dev_slice_memory", "dev_slice_tflops", "dev_site"),
    *("dev_memory", "dev_shared", "dev_share_divisor"),
    *("dev_multi_slice", "dev_inv_slice_memory", "slice_dev", "slice_pos"),
)


class ClusterTable:
    """A snapshot as numpy columns over nodes, devices and slices.

    Categorical columns (tier, site, kind, model) are integer codes into small name
    lists, so a per-name rule is evaluated once per distinct name and gathered. The
    layout columns (``_LAYOUT_COLUMNS``) are shared between tables of the same layout
    and read-only; the rest is this round's.
    """

    node_index: dict[str, int]
    tiers: list[str]
    tier_index: dict[str, int]
    node_tier: NDArray[np.int64]
    sites: list[str]
    site_index: dict[str, int]
    node_site: NDArray[np.int64]
    kinds: list[str]
    kind_index: dict[str, int]
    dev_kind: NDArray[np.int64]
    models: list[str]
    model_index: dict[str, int]
    dev_model: NDArray[np.int64]
    dev_node: NDArray[np.int64]
    dev_slices: NDArray[np.int64]
    dev_memory: NDArray[np.float64]
    dev_shared: NDArray[np.bool_]
    dev_share_divisor: NDArray[np.int64]
    dev_slice_memory: NDArray[np.float64]
    dev_slice_tflops: NDArray[np.float64]
    dev_site: NDArray[np.int64]
    dev_multi_slice: NDArray[np.bool_]
    dev_inv_slice_memory: NDArray[np.float64]
    slice_dev: NDArray[np.int64]
    slice_pos: NDArray[np.int64]

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        nodes = snapshot.nodes
        layout = _layout(nodes)
        self.layout = layout
        self.nodes: tuple[NodeView, ...] = nodes
        for name in _LAYOUT_COLUMNS:
            setattr(self, name, getattr(layout, name))
        self.dev_slices_list = layout.dev_slices_list

        self.node_healthy: NDArray[np.bool_] = np.fromiter(
            (n.healthy for n in nodes), bool, len(nodes)
        )
        self.warm_nodes: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for digest in n.warm_digests:
                self.warm_nodes.setdefault(digest, []).append(i)
        devices: list[DeviceView] = [dv for n in nodes for dv in n.devices]
        self.devices = devices
        # A device lists busy time per slice; trust ``slices`` and pad what is missing,
        # since an agent that just resliced may report the old vector for a heartbeat.
        n_slices = len(self.slice_dev)
        reported = [dv.slice_busy_seconds for dv in devices]
        self.slice_busy: NDArray[np.float64]
        if sum(map(len, reported)) == n_slices and all(
            len(r) == s for r, s in zip(reported, self.dev_slices_list, strict=True)
        ):
            self.slice_busy = np.fromiter(chain.from_iterable(reported), float, n_slices)
        else:
            self.slice_busy = np.zeros(n_slices)
            first = layout.dev_first_slice
            for d, busy in enumerate(reported):
                busy = busy[: self.dev_slices_list[d]]
                start = int(first[d])
                self.slice_busy[start : start + len(busy)] = busy
        np.maximum(self.slice_busy, 0.0, out=self.slice_busy)
        #: Per slice: the deployment whose replica holds it (``DeviceView.replica_slices``)
        #: as an index into ``holders``, or -1: only that deployment's jobs may go there.
        self.holders: dict[str, int] = {}
        self.slice_holder = np.full(n_slices, -1, dtype=np.int64)
        for d, dv in enumerate(devices):
            for i, name in dv.replica_slices.items():
                if 0 <= i < self.dev_slices_list[d]:
                    code = self.holders.setdefault(name, len(self.holders))
                    self.slice_holder[int(layout.dev_first_slice[d]) + i] = code
        self.dev_idle = np.ones(len(devices), dtype=bool)
        if len(self.slice_dev):
            np.logical_and.at(self.dev_idle, self.slice_dev, self.slice_busy == 0.0)
        # What a shared device has left for new reservations (``_shares``); a slice owns
        # its share, so the rest have no such bound (inf).
        reserved = np.fromiter((dv.reserved_memory_bytes for dv in devices), float, len(devices))
        other = np.fromiter((dv.unexplained_memory_bytes for dv in devices), float, len(devices))
        self.dev_free_memory = np.where(
            self.dev_shared, np.maximum(self.dev_memory - reserved - other, 0.0), np.inf
        )
        milli = np.fromiter((dv.reserved_milli for dv in devices), np.int64, len(devices))
        self.dev_free_milli = np.where(self.dev_shared, np.maximum(1000 - milli, 0), 1 << 40)

    def held_from(self, job: JobRequest) -> NDArray[np.bool_] | None:
        """Per slice: held by another deployment's replica than ``job``'s, so closed to
        it; None when no slice is held from it."""
        if not self.holders:
            return None
        own = self.holders.get(job.deployment, -1) if job.deployment else -1
        held: NDArray[np.bool_] = (self.slice_holder >= 0) & (self.slice_holder != own)
        return held if held.any() else None

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def n_slices(self) -> int:
        return len(self.slice_dev)


class PlanContext:
    """What plugins may read: the table, network costs and configuration of one round."""

    def __init__(self, snapshot: ClusterSnapshot, config: PlacementConfig) -> None:
        self.snapshot = snapshot
        self.config = config
        self.table = ClusterTable(snapshot)
        self.network = NetworkCosts(snapshot.network)
        kind_efficiency = np.array([config.efficiency_of(k) for k in self.table.kinds], float)
        #: Effective FLOP/s of one slice at the device's own precision; 0 for a device
        #: that declares no throughput.
        self.dev_flops_per_s = np.maximum(
            self.table.dev_slice_tflops * 1e12 * kind_efficiency[self.table.dev_kind], 0.0
        )
        self._flops_at: dict[str, NDArray[np.float64]] = {}
        self._runtime_overhead: NDArray[np.float64] | None = None
        self._site_vectors: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
        self._warm: dict[str, NDArray[np.bool_]] = {}
        self._reachable: dict[str, NDArray[np.bool_]] = {}

    def flops_per_s(self, precision: str) -> NDArray[np.float64]:
        """Effective FLOP/s of one slice for a model running in ``precision`` (``fp32``,
        ``fp16``, ``bf16``, ``int8``…): each device's figure at that precision, so
        devices are compared like with like (``PRECISION_RELATIVE`` where a device
        publishes none)."""
        hit = self._flops_at.get(precision)
        if hit is None:
            hit = self._flops_at[precision] = (
                self.dev_flops_per_s * self.table.layout.precision_scale(precision)
            )
        return hit

    @property
    def runtime_overhead(self) -> NDArray[np.float64]:
        """Per device: memory its runtime holds besides a job's tensors, by
        ``PlacementConfig.runtime_overhead``. Built on first use: only shared devices
        need it."""
        if self._runtime_overhead is None:
            self._runtime_overhead = self.table.layout.column(
                ("runtime_overhead", tuple(sorted(self.config.runtime_overhead.items()))),
                self.overhead_of,
            )
        return self._runtime_overhead

    def overhead_of(self, device: Device) -> int:
        """One device's entry of ``runtime_overhead``: its ``host`` entry for a device
        whose jobs use host memory (a CPU, or a simulated device, which runs on the CPU)."""
        table = self.config.runtime_overhead
        if device.simulated or device.kind == "cpu":
            return int(table.get("host", 0))
        return int(table.get(f"{device.kind}/{device.vendor}", table.get(device.kind, 0)))

    def warm_devices(self, digest: str) -> NDArray[np.bool_]:
        """Per device: does its node have ``digest`` loaded? Cached: jobs share models."""
        hit = self._warm.get(digest)
        if hit is None:
            t = self.table
            node_warm = np.zeros(len(t.nodes), dtype=bool)
            node_warm[t.warm_nodes.get(digest, [])] = True
            hit = self._warm[digest] = node_warm[t.dev_node]
        return hit

    def reachable_from(self, source: str) -> NDArray[np.bool_]:
        """Per device: is there a path from ``source`` to its node's site? Cached."""
        hit = self._reachable.get(source)
        if hit is None:
            hit = np.isfinite(self.site_vectors(source)[0])[self.table.dev_site]
            self._reachable[source] = hit
        return hit

    def site_vectors(self, source: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Latency and bottleneck bandwidth from ``source`` to every site, by site code.

        Latency is ``inf`` where no path exists; bandwidth is ``inf`` when co-located.
        """
        hit = self._site_vectors.get(source)
        if hit is None:
            n = len(self.table.sites)
            latency, bandwidth = np.empty(n), np.empty(n)
            for code, site in enumerate(self.table.sites):
                m = self.network.metrics(source, site)
                latency[code], bandwidth[code] = (math.inf, 0.0) if m is None else m
            hit = self._site_vectors[source] = (latency, bandwidth)
        return hit

    def site_path(self, source: str, site_code: int) -> tuple[float, float]:
        """(latency, bandwidth) from ``source`` to one site; latency ``inf`` if cut off."""
        latency, bandwidth = self.site_vectors(source)
        return float(latency[site_code]), float(bandwidth[site_code])

    def site_seconds(self, source: str, nbytes: float) -> NDArray[np.float64]:
        """Seconds to move ``nbytes`` from ``source`` to each site, indexed by site code."""
        latency, bandwidth = self.site_vectors(source)
        if nbytes <= 0:
            return latency.copy()
        with np.errstate(divide="ignore"):
            return latency + nbytes / bandwidth

    def delivery_seconds(self, source: str, nbytes: float, relay: str = "") -> NDArray[np.float64]:
        """Seconds to move ``nbytes`` from ``source`` to each site by way of ``relay``
        (``JobRequest.relay``: stored there, then fetched), indexed by site code;
        straight from ``source`` when there is no relay or it is not in the network.
        Paths are symmetric, so this is also each site's time to send them back."""
        if not relay or relay == source or not self.network.has(relay):
            return self.site_seconds(source, nbytes)
        hop = self.network.metrics(source, relay)
        first = math.inf if hop is None else hop.seconds(nbytes)
        return first + self.site_seconds(relay, nbytes)


@runtime_checkable
class FilterPlugin(Protocol):
    """Says why a job cannot go somewhere.

    ``check`` is the definition: ``None`` when the (node, device) pair is fine, else a
    reason a person can act on. ``mask`` is the same rule over every device at once
    (``True`` = passes); tests hold the two to agreement. ``device`` is ``None`` for a
    node-level check of a node without devices.

    ``node_level``: the rule looks at the node only (checked first, reported once per
    node). ``unresolvable``: a rejection stands until the cluster's make-up changes (a
    device kind the node lacks, too little memory, a tier or site the job excludes), as
    Kubernetes' ``UnschedulableAndUnresolvable``; ``False`` for a rule whose rejection
    may clear by itself (a node lost or quarantined may come back), so a job it alone
    keeps out waits rather than fails (``Plan.unresolvable``).
    """

    name: str
    node_level: bool
    unresolvable: bool

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None: ...

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray: ...


@runtime_checkable
class ScorePlugin(Protocol):
    """Puts named terms, in seconds, on the devices ``idx`` for one job.

    ``dev_idle[d]`` says whether device ``d`` has nothing on it at this point of the
    round (it changes as the solver assigns jobs).
    """

    name: str

    def terms(
        self, job: JobRequest, ctx: PlanContext, idx: DeviceIndex, dev_idle: np.ndarray
    ) -> dict[str, np.ndarray]: ...


@runtime_checkable
class Strategy(Protocol):
    """Who places a round: ``plan`` is pure (a snapshot and jobs in, a ``Plan`` out).

    ``PlacementConfig.policy`` names one; the registry (``_strategies``) holds the cost
    model and every GPU-sharing policy of ``placement.gpushare``.
    """

    name: str

    def plan(
        self, snapshot: ClusterSnapshot, jobs: Sequence[JobRequest], config: PlacementConfig
    ) -> Plan: ...
