"""Score plugins: each puts named terms, in seconds, on candidate devices for one job.

The queue term is not here: it depends on what the solver has already assigned this
round, so the solver owns it (see ``_solver``). The formulas are in the solver's
docstring; these are their vectorised forms.
"""

from __future__ import annotations

import numpy as np

from anypu.placement._framework import DeviceIndex, PlanContext, ScorePlugin
from anypu.placement._model import JobRequest

__all__ = [
    "DEFAULT_SCORES",
    "ComputeScore",
    "FragmentationScore",
    "TransferScore",
    "WarmScore",
    "score_terms",
]


class ComputeScore:
    """Run time on one slice: measured on that device model if we have it, else what the
    device model's runs of other models predict (``JobRequest.learned_seconds``), else
    FLOPs over effective throughput at the model's precision plus a launch overhead."""

    name = "compute"

    def terms(
        self, job: JobRequest, ctx: PlanContext, idx: DeviceIndex, dev_idle: np.ndarray
    ) -> dict[str, np.ndarray]:
        t = ctx.table
        rate = ctx.flops_per_s(job.precision)[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            secs = job.flops / rate + ctx.config.launch_overhead_s
        secs[rate <= 0] = np.inf  # no throughput: only a measurement can cost it
        if job.measured_seconds or job.learned_seconds:
            models = t.dev_model[idx]
            known = {**job.learned_seconds, **job.measured_seconds}  # measured wins
            for model, measured in known.items():
                code = t.model_index.get(model)
                if code is not None:
                    # A measurement is of the whole device; a slice has 1/n of its compute
                    # (a seat of a shared device, all of it).
                    hit = models == code
                    secs[hit] = measured * t.dev_share_divisor[idx][hit]
        return {"compute": secs}


class TransferScore:
    """Inputs from the origin to the node's site and outputs back, each way
    ``latency + bytes / bottleneck``, by way of the job's relay when it has one (the
    scheduler, which stores the inputs the agent fetches): origin to relay, then relay
    to site."""

    name = "transfer"

    def terms(
        self, job: JobRequest, ctx: PlanContext, idx: DeviceIndex, dev_idle: np.ndarray
    ) -> dict[str, np.ndarray]:
        per_site = ctx.delivery_seconds(
            job.origin, job.input_bytes, job.relay
        ) + ctx.delivery_seconds(job.origin, job.output_bytes, job.relay)
        return {"transfer": per_site[ctx.table.dev_site[idx]]}


class WarmScore:
    """Zero where the node has the artifact loaded; else fetching it from where models
    are served plus loading it."""

    name = "warm"

    def terms(
        self, job: JobRequest, ctx: PlanContext, idx: DeviceIndex, dev_idle: np.ndarray
    ) -> dict[str, np.ndarray]:
        t = ctx.table
        cfg = ctx.config
        source = ctx.network.artifact_source(job.origin)
        load = cfg.load_overhead_s + job.artifact_bytes / cfg.load_bytes_per_s
        per_site = ctx.site_seconds(source, job.artifact_bytes) + load
        secs = per_site[t.dev_site[idx]]
        if job.artifact_digest in t.warm_nodes:
            secs[ctx.warm_devices(job.artifact_digest)[idx]] = 0.0
        return {"warm": secs}


class FragmentationScore:
    """A tie-breaker that packs: a little for opening an idle multi-slice device, and a
    little for the share of a slice's memory the job leaves unused."""

    name = "fragmentation"

    def terms(
        self, job: JobRequest, ctx: PlanContext, idx: DeviceIndex, dev_idle: np.ndarray
    ) -> dict[str, np.ndarray]:
        t = ctx.table
        unit = ctx.config.fragmentation_s
        opens = dev_idle[idx] & t.dev_multi_slice[idx]
        # Filtered devices hold less than the job; clipping keeps their term finite.
        leftover = np.maximum(1.0 - job.memory_bytes * t.dev_inv_slice_memory[idx], 0.0)
        return {"fragmentation": unit * (opens + leftover)}


DEFAULT_SCORES: tuple[ScorePlugin, ...] = (
    ComputeScore(),
    TransferScore(),
    WarmScore(),
    FragmentationScore(),
)


def score_terms(
    job: JobRequest, ctx: PlanContext, idx: DeviceIndex, dev_idle: np.ndarray
) -> dict[str, np.ndarray]:
    """Every score plugin of the round's config: their terms for ``job`` on devices
    ``idx``, merged into one mapping."""
    out: dict[str, np.ndarray] = {}
    for plugin in ctx.config.scores:
        for term, values in plugin.terms(job, ctx, idx, dev_idle).items():
            if term in out:
                raise ValueError(f"score plugins {plugin.name!r} and another both emit {term!r}")
            out[term] = values
    return out
