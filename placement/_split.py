r"""Split across tiers: run the first layers of a model on one device and the rest on
another when the activation crossing the cut is small enough that the two finish sooner
than any one device alone.

The SDK offers a few cuts of a model's exported graph (``sdk._split``): each a *head*
(the model's inputs to one activation tensor) and a *tail* (that tensor to the model's
outputs), with the activation's size. For a job :math:`j` from origin :math:`o` and a
cut :math:`k` with activation :math:`a_k` bytes, a head on device :math:`h` and a tail
on :math:`t` are predicted to take

    S(k, h, t) = in(o → h) + R(head_k, h) + move(h → t, a_k) + R(tail_k, t) + out(t → o)

where ``in``/``out``/``move`` are ``latency + bytes / bottleneck`` along the network's
least-latency path (``_network``), by way of the job's relay where it has one
(``JobRequest.relay``: in the live system the inputs, the activation and the outputs
all pass the scheduler, so ``in(o → h) = T(o → relay) + T(relay → h)``, and likewise),
and :math:`R(·, d)` is the rest of
:math:`C(·, d)` (``_deadlines``): warm-up, compute and the queue of the least busy slice.
Every filter of the config but the deadline's keeps devices out of either stage, and
:math:`h ≠ t`. The best one device alone takes :math:`W = \min_d C(j, d)`.

``choose_split`` returns the least :math:`S` when :math:`S < (1 - m) · W` (margin
:math:`m`, ``SPLIT_MARGIN``: a prediction a little better is not worth the second
stage's risks), else None. Cost: for each cut, each site :math:`s` keeps only its
best head (the tail sees nothing of the head but its site), so it is
:math:`O(K · |sites| · |devices|)`.

A split therefore pays off live where the slow link is between the relay and the
device that would run the whole model (a phone near its site's scheduler, a cloud GPU
across a narrow uplink); a head beside the caller does not spare the caller's own
uplink while the inputs go up to the scheduler first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from anypu.placement._deadlines import (
    completion_seconds,
    completion_terms,
    passing_but_the_deadline,
)
from anypu.placement._framework import PlanContext
from anypu.placement._model import ClusterSnapshot, JobRequest

if TYPE_CHECKING:
    from anypu.placement._config import PlacementConfig

__all__ = ["SPLIT_MARGIN", "SplitCandidate", "SplitChoice", "choose_split"]

#: A split must be predicted this much sooner than the best one device alone.
SPLIT_MARGIN = 0.1


@dataclass(frozen=True)
class SplitCandidate:
    """One cut of a job's model: its head and tail as jobs of their own (each with its
    artifact, work and memory; ``head.output_bytes`` and ``tail.input_bytes`` are the
    activation's size)."""

    label: str
    head: JobRequest
    tail: JobRequest

    @property
    def activation_bytes(self) -> int:
        return self.head.output_bytes


@dataclass(frozen=True)
class SplitChoice:
    """The cut and the two devices, with the predicted seconds of the split
    (``predicted_seconds``, by term in ``terms``) and of the best one device
    (``whole_seconds``, on ``whole_node``/``whole_device``)."""

    index: int
    label: str
    head_node: str
    head_device: str
    tail_node: str
    tail_device: str
    head_site: str
    predicted_seconds: float
    whole_seconds: float
    whole_node: str
    whole_device: str
    terms: dict[str, float]

    def describe(self) -> str:
        """``cut after relu_2 (4 KiB): head on edge-1/cpu0, tail on cloud-1/gpu0, 31 ms
        predicted against 52 ms on cloud-1/gpu0 alone``."""
        return (
            f"cut {self.label}: head on {self.head_node}/{self.head_device}, tail on"
            f" {self.tail_node}/{self.tail_device}, {self.predicted_seconds * 1000:.1f} ms"
            f" predicted against {self.whole_seconds * 1000:.1f} ms on"
            f" {self.whole_node}/{self.whole_device} alone"
        )


def _rest(job: JobRequest, ctx: PlanContext) -> NDArray[np.float64]:
    """:math:`R(job, d)`: ``C`` less its transfer, ``inf`` where a filter says no."""
    terms = completion_terms(job, ctx)
    rest = terms["warm"] + terms["compute"] + terms["queue"]
    return np.where(passing_but_the_deadline(job, ctx), rest, np.inf)


def choose_split(
    snapshot: ClusterSnapshot,
    job: JobRequest,
    candidates: Sequence[SplitCandidate],
    config: PlacementConfig | None = None,
    margin: float = SPLIT_MARGIN,
) -> SplitChoice | None:
    """The split of the module docstring, or None when no cut beats one device."""
    from anypu.placement._config import PlacementConfig

    ctx = PlanContext(snapshot, config or PlacementConfig())
    t = ctx.table
    if not candidates or t.n_devices < 2:
        return None
    whole = np.where(passing_but_the_deadline(job, ctx), completion_seconds(job, ctx), np.inf)
    w = int(np.argmin(whole))
    if not np.isfinite(whole[w]):
        return None
    back = ctx.delivery_seconds(job.origin, job.output_bytes, job.relay)[t.dev_site]
    into = ctx.delivery_seconds(job.origin, job.input_bytes, job.relay)[t.dev_site]
    best: tuple[float, SplitChoice] | None = None
    for index, cut in enumerate(candidates):
        head = replace(cut.head, origin=job.origin, deadline_s=None, best_effort=False)
        tail = replace(cut.tail, origin=job.origin, deadline_s=None, best_effort=False)
        head_cost = into + _rest(head, ctx)
        tail_rest = _rest(tail, ctx) + back
        for code, site in enumerate(t.sites):
            in_site = np.flatnonzero(t.dev_site == code)
            h = int(in_site[np.argmin(head_cost[in_site])])
            if not np.isfinite(head_cost[h]):
                continue
            move = ctx.delivery_seconds(site, cut.activation_bytes, job.relay)[t.dev_site]
            total = head_cost[h] + move + tail_rest
            total[h] = np.inf
            d = int(np.argmin(total))
            if not np.isfinite(total[d]) or (best is not None and total[d] >= best[0]):
                continue
            head_dev, tail_dev, whole_dev = t.devices[h], t.devices[d], t.devices[w]
            choice = SplitChoice(
                index=index,
                label=cut.label,
                head_node=head_dev.node_id,
                head_device=head_dev.device.device_id,
                tail_node=tail_dev.node_id,
                tail_device=tail_dev.device.device_id,
                head_site=site,
                predicted_seconds=float(total[d]),
                whole_seconds=float(whole[w]),
                whole_node=whole_dev.node_id,
                whole_device=whole_dev.device.device_id,
                terms={
                    "head": float(head_cost[h]),
                    "activation": float(move[d]),
                    "tail": float(tail_rest[d]),
                },
            )
            best = (float(total[d]), choice)
    if best is None or best[0] >= (1.0 - margin) * float(whole[w]):
        return None
    return best[1]
