"""Filter plugins: each says, in words a person can act on, why a job cannot go somewhere.

Node-level filters (health, node/tier/site constraints, reachability) run before
device-level ones (kind, memory, throughput), so a node that is lost reports that
once instead of once per device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from anypu._labels import device_labels, selector_text
from anypu.devices import format_bytes
from anypu.placement._deadlines import DeadlineFilter
from anypu.placement._framework import FilterPlugin, PlanContext
from anypu.placement._model import DeviceView, JobRequest, NodeView

__all__ = [
    "DEFAULT_FILTERS",
    "DeadlineFilter",
    "DeviceKindFilter",
    "HealthFilter",
    "LabelFilter",
    "MemoryFilter",
    "NodeNameFilter",
    "OperatorFilter",
    "ReachableFilter",
    "SiteFilter",
    "ThroughputFilter",
    "TierFilter",
    "allowed_devices",
    "explain_unschedulable",
    "unresolvable",
]


def _listing(names: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(names)) + "]"


def _per_name(names: Sequence[str], allowed: frozenset[str]) -> np.ndarray:
    return np.fromiter((name in allowed for name in names), bool, len(names))


class HealthFilter:
    """A node that is lost, disconnected or quarantined takes nothing, for now: it may come
    back, so this is the one rule whose rejection is not unresolvable."""

    name = "health"
    node_level = True
    unresolvable = False

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        return None if node.healthy else f"node unhealthy ({node.unhealthy_reason or 'lost'})"

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        return t.node_healthy[t.dev_node]


class NodeNameFilter:
    name = "node"
    node_level = True
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        if not job.nodes or node.node_id in job.nodes:
            return None
        return f"node {node.node_id} not in {_listing(job.nodes)}"

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        if not job.nodes:
            return np.ones(t.n_devices, dtype=bool)
        ok = np.zeros(len(t.nodes), dtype=bool)
        ok[[t.node_index[n] for n in job.nodes if n in t.node_index]] = True
        return ok[t.dev_node]


class TierFilter:
    name = "tier"
    node_level = True
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        if not job.tiers or node.tier in job.tiers:
            return None
        return f"tier {node.tier} not in {_listing(job.tiers)}"

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        if not job.tiers:
            return np.ones(t.n_devices, dtype=bool)
        return _per_name(t.tiers, job.tiers)[t.node_tier[t.dev_node]]


class SiteFilter:
    name = "site"
    node_level = True
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        if not job.sites or node.site in job.sites:
            return None
        return f"site {node.site} not in {_listing(job.sites)}"

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        if not job.sites:
            return np.ones(t.n_devices, dtype=bool)
        return _per_name(t.sites, job.sites)[t.dev_site]


class ReachableFilter:
    """Inputs must reach the node from the origin, and the model from wherever it is served
    (unless the node already has it warm)."""

    name = "reachable"
    node_level = True
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        code = ctx.table.site_index[node.site]
        if math.isinf(ctx.delivery_seconds(job.origin, 0, job.relay)[code]):
            via = f" by way of {job.relay}" if ctx.network.has(job.relay) else ""
            return f"site {node.site} unreachable from origin {job.origin}{via}"
        source = ctx.network.artifact_source(job.origin)
        warm = job.artifact_digest in node.warm_digests
        if not warm and math.isinf(ctx.site_path(source, code)[0]):
            return f"site {node.site} unreachable from {source}, which serves the model (not warm)"
        return None

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        if ctx.network.graph is None:
            return np.ones(t.n_devices, dtype=bool)
        from_origin = np.isfinite(ctx.delivery_seconds(job.origin, 0, job.relay))[t.dev_site]
        from_source = ctx.reachable_from(ctx.network.artifact_source(job.origin))
        return from_origin & (from_source | ctx.warm_devices(job.artifact_digest))


class DeviceKindFilter:
    name = "kind"
    node_level = False
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        if device is None or not job.device_kinds or device.device.kind in job.device_kinds:
            return None
        allows = ", ".join(sorted(job.device_kinds))
        return f"device kind {device.device.kind} not allowed (job allows: {allows})"

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        if not job.device_kinds:
            return np.ones(t.n_devices, dtype=bool)
        return _per_name(t.kinds, job.device_kinds)[t.dev_kind]


class LabelFilter:
    """Every requirement of the job's ``label_selector`` holds of the device's labels:
    its node's (``--label``, the site) and its own from its backend (a Ray node's;
    ``anypu._labels.device_labels``). Device-level: one agent standing for a Ray
    cluster has devices on nodes of different labels."""

    name = "labels"
    node_level = False
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        if device is None or not job.label_selector:
            return None
        labels = device_labels(node.labels, device.device.extra)
        failed = [r for r in job.label_selector if not r.matches(labels)]
        if not failed:
            return None
        shown = [f"{k}={v}" for k, v in sorted(labels.items())]
        more = f", … {len(shown) - 6} more" if len(shown) > 6 else ""
        return (
            f"labels {{{', '.join(shown[:6])}{more}}} do not match {selector_text(failed)}"
            if shown
            else f"no labels, and the job wants {selector_text(failed)}"
        )

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        if not job.label_selector:
            return np.ones(t.n_devices, dtype=bool)
        return np.fromiter(
            (
                all(
                    r.matches(device_labels(t.nodes[t.dev_node[i]].labels, dv.device.extra))
                    for r in job.label_selector
                )
                for i, dv in enumerate(t.devices)
            ),
            bool,
            t.n_devices,
        )


class MemoryFilter:
    """A slice runs one job at a time, so the job must fit one slice's memory on its own;
    on a shared device, the whole device's (whether it fits beside the jobs already
    there is the strategy's to say: that clears as they finish)."""

    name = "memory"
    node_level = False
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        if device is None:
            return None
        d = device.device
        if d.shared:
            need = job.memory_bytes + ctx.overhead_of(d)
            if need <= d.memory_bytes:
                return None
            return (
                f"needs {format_bytes(need)} with its runtime, the device has"
                f" {format_bytes(d.memory_bytes)}"
            )
        if job.memory_bytes <= d.slice_memory_bytes:
            return None
        text = f"needs {format_bytes(job.memory_bytes)}, slice has {format_bytes(d.slice_memory_bytes)}"
        if d.slices > 1:
            text += f" ({format_bytes(d.memory_bytes)} in {d.slices} slices; use fewer slices)"
        return text

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        if not t.dev_shared.any():
            return t.dev_slice_memory >= job.memory_bytes
        need = job.memory_bytes + np.where(t.dev_shared, ctx.runtime_overhead, 0.0)
        return t.dev_slice_memory >= need


class ThroughputFilter:
    """A device reporting no throughput can only be costed from a measurement on its model."""

    name = "throughput"
    node_level = False
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        if (
            device is None
            or device.device.tflops > 0
            or device.device.model in job.measured_seconds
            or device.device.model in job.learned_seconds
        ):
            return None
        return (
            f"device reports no throughput (tflops {device.device.tflops:g}) and the job has "
            f"no measured run on {device.device.model}; declare its tflops"
        )

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        ok = t.dev_slice_tflops > 0
        for model in (*job.measured_seconds, *job.learned_seconds):
            code = t.model_index.get(model)
            if code is not None:
                ok |= t.dev_model == code
        return ok


class OperatorFilter:
    """A device whose backend lacks an operator the model calls is skipped: one its agent
    says it lacks (``Device.extra["lacks_operators"]``, checked against the model's
    operators recorded at export, ``JobRequest.operators``), or a backend (device kind
    and vendor) a run of this model found lacking one; the job goes to another kind."""

    name = "operators"
    node_level = False
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        if device is None:
            return None
        declared = device.device.lacking_operators & job.operators
        if declared:
            return (
                f"lacks {', '.join(sorted(declared))}, which the model calls (its agent says"
                " the backend has no kernel for it)"
            )
        found = job.unsupported_on.get((device.device.kind, device.device.vendor))
        return None if found is None else f"lacks an operator the model needs ({found})"

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        t = ctx.table
        ok = np.ones(t.n_devices, dtype=bool)
        if job.operators:
            for d, lacks in t.layout.lacking_operators():
                if lacks & job.operators:
                    ok[d] = False
        if job.unsupported_on:
            lacking = job.unsupported_on
            ok &= np.fromiter(
                ((v.device.kind, v.device.vendor) not in lacking for v in t.devices),
                bool,
                t.n_devices,
            )
        return ok


#: Cheap, node-level rules first: their reason is what a rejected node reports.
DEFAULT_FILTERS: tuple[FilterPlugin, ...] = (
    HealthFilter(),
    NodeNameFilter(),
    TierFilter(),
    SiteFilter(),
    ReachableFilter(),
    DeviceKindFilter(),
    LabelFilter(),
    MemoryFilter(),
    ThroughputFilter(),
    OperatorFilter(),
    DeadlineFilter(),  # last: it costs the job on every device
)


def allowed_devices(job: JobRequest, ctx: PlanContext) -> NDArray[np.bool_]:
    """Devices (by table index) that pass every filter of the round's config for ``job``."""
    ok: NDArray[np.bool_] = np.ones(ctx.table.n_devices, dtype=bool)
    for f in ctx.config.filters:
        ok &= f.mask(job, ctx)
    return ok


def unresolvable(job: JobRequest, ctx: PlanContext) -> bool:
    """Whether no device would take ``job`` even once every rejection that may clear by
    itself (``FilterPlugin.unresolvable`` false: a node lost for now) has cleared."""
    ok = np.ones(ctx.table.n_devices, dtype=bool)
    for f in ctx.config.filters:
        if f.unresolvable:
            ok &= f.mask(job, ctx)
    return not ok.any()


def explain_unschedulable(job: JobRequest, ctx: PlanContext) -> dict[str, str]:
    """Why each node rejects ``job``: its first node-level reason, or each device's."""
    filters = ctx.config.filters
    node_filters = [f for f in filters if f.node_level]
    device_filters = [f for f in filters if not f.node_level]
    reasons: dict[str, str] = {}
    for node in ctx.table.nodes:
        reason = next(
            (r for f in node_filters if (r := f.check(job, node, None, ctx)) is not None), None
        )
        if reason is None and not node.devices:
            reason = "node has no devices"
        if reason is None:
            parts = []
            for dv in node.devices:
                why = next(
                    (r for f in device_filters if (r := f.check(job, node, dv, ctx)) is not None),
                    None,
                )
                parts.append(f"{dv.device.device_id}: {why or 'fits'}")
            reason = "; ".join(parts)
        reasons[node.node_id] = reason
    return reasons
