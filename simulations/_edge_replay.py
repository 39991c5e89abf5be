r"""Replaying model calls with deadlines over a cloud–edge–device network, by policy.

Every device runs one call at a time, first come first served. A call of model
:math:`j` from origin :math:`o`, placed at time :math:`t` on device :math:`d` at site
:math:`σ`, ends at

    start = max(t + T(o, σ, in_j), free_d),   free_d ← start + C_jd,
    done  = start + C_jd + T(σ, o, out_j)

with :math:`T` the network cost placement uses (least-latency path: latency sum + bytes
over the bottleneck; straight from the origin, as a leased call's bytes go, with no
scheduler in between) and :math:`C_{jd}` the compute placement predicts (FLOPs over the
device's throughput at the model's precision × its kind's efficiency, plus the launch
overhead) times a log-normal factor (σ = ``NOISE``, seeded): placement knows the network
exactly and the compute up to that noise. Models are taken to be loaded everywhere
(no warm-up). A call meets its deadline when ``done − t ≤ deadline``.

Policies, each given the cluster as it is at the call's arrival:

- ``anypu``: ``placement.plan`` with the call's deadline (the live scheduler's code); a
  call no device is predicted to meet is placed best effort (where it is predicted to
  finish first) rather than refused, so every policy serves every call it can;
- ``cloud-only`` / ``edge-only``: ``placement.plan`` restricted to that tier, no deadline
  (the cost model still picks the least loaded, nearest device in the tier);
- ``nearest-first``: the nearest site (least latency from the origin) with a device that
  can hold the model, its least busy device;
- ``ray-hybrid``: Ray's default hybrid scheduling: the local node (the origin's site, else
  the nearest) while under half of its devices are busy, else one of the three least
  busy nodes at random (seeded) — pack locally, then spread;
- ``anypu+split``: ``anypu``, and for a model whose workload entry lists ``cuts``,
  ``placement.choose_split`` (the live scheduler's code) may run its head on one device
  and its tail on another. The head queues on its device as any call; the activation
  leaves when the head ends, crosses :math:`T(σ_h, σ_t, a)`, and the tail queues on its
  device from then; the outputs return from the tail's site.

A call a policy cannot place anywhere (no device holds the model) is dropped: it misses
its deadline and has no latency.

``whole_call_bound`` is what no policy that runs each call whole on one device can beat:
the share of calls that some device would finish in time with every queue empty, with
the same noise draw the replay gives that call (a whole call draws one factor, in
arrival order, whichever policy places it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from anypu.placement import (
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NetworkCosts,
    NodeView,
    PlacementConfig,
    PlanContext,
    SplitCandidate,
    allowed_devices,
    choose_split,
    plan,
)
from anypu.simulations._edge_scenario import Scenario

__all__ = ["NOISE", "POLICIES", "Call", "Result", "calls_of", "replay", "whole_call_bound"]

NOISE = 0.15
_CONFIG = PlacementConfig(use_cpsat=False)


@dataclass(frozen=True)
class Call:
    at: float
    stream: int
    origin: str
    model: str
    deadline_s: float


@dataclass
class Result:
    """One policy's replay: per call, its latency (inf: dropped), whether it met its
    deadline, the tier it ran on and what its compute cost."""

    policy: str
    latency: list[float] = field(default_factory=list)
    stream: list[int] = field(default_factory=list)
    met: list[bool] = field(default_factory=list)
    tier: list[str] = field(default_factory=list)
    cost: float = 0.0

    def attainment(self) -> float:
        return sum(self.met) / max(1, len(self.met))

    def attainment_of(self, stream: int) -> float:
        mine = [met for met, s in zip(self.met, self.stream, strict=True) if s == stream]
        return sum(mine) / max(1, len(mine))

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latency)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def calls_of(scenario: Scenario, seed: int) -> list[Call]:
    """Every stream's Poisson arrivals over the scenario's duration, in time order."""
    rng = np.random.default_rng(seed)
    calls = []
    for i, s in enumerate(scenario.streams):
        t = rng.exponential(1 / s.rate_per_s)
        while t < scenario.duration_s:
            calls.append(Call(float(t), i, s.origin, s.model, s.deadline_s))
            t += rng.exponential(1 / s.rate_per_s)
    calls.sort(key=lambda c: (c.at, c.stream))
    return calls


class _World:
    """The devices' queues and the static views placement is built from."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        digests = frozenset(scenario.models)
        self.nodes = tuple(
            NodeView(
                site,
                scenario.tiers[site],
                site,
                devices=tuple(DeviceView(site, d, (0.0,)) for d in devices),
                warm_digests=digests,
            )
            for site, devices in scenario.devices.items()
            if devices
        )
        self.free_at: dict[tuple[str, str], float] = {
            dv.key: 0.0 for n in self.nodes for dv in n.devices
        }
        self.static = ClusterSnapshot(self.nodes, network=scenario.network)
        self.ctx = PlanContext(self.static, _CONFIG)
        self.index = {dv.key: i for i, dv in enumerate(self.ctx.table.devices)}
        self.costs = NetworkCosts(scenario.network)
        self.rng = np.random.default_rng(seed + 1)
        self.tier_of = {n.node_id: n.tier for n in self.nodes}

    def snapshot(self, now: float) -> ClusterSnapshot:
        nodes = tuple(
            replace(
                n,
                devices=tuple(
                    replace(dv, slice_busy_seconds=(max(0.0, self.free_at[dv.key] - now),))
                    for dv in n.devices
                ),
            )
            for n in self.nodes
        )
        return replace(self.static, nodes=nodes)

    def job(self, call: Call, number: int, **fields: Any) -> JobRequest:
        model = self.scenario.models[call.model]
        return JobRequest(
            job_id=f"c{number}",
            artifact_digest=call.model,
            flops=model.flops,
            memory_bytes=model.memory_bytes,
            input_bytes=model.input_bytes,
            output_bytes=model.output_bytes,
            origin=call.origin,
            precision=model.precision,
            **fields,
        )

    def allowed(self, call: Call) -> np.ndarray:
        return allowed_devices(self.job(call, 0), self.ctx)

    def compute_seconds(self, call: Call, key: tuple[str, str]) -> float:
        model = self.scenario.models[call.model]
        rate = float(self.ctx.flops_per_s(model.precision)[self.index[key]])
        return model.flops / rate + _CONFIG.launch_overhead_s

    def run(self, call: Call, key: tuple[str, str], result: Result) -> None:
        model = self.scenario.models[call.model]
        there = self.costs.metrics(call.origin, key[0])
        back = self.costs.metrics(key[0], call.origin)
        if there is None or back is None:
            self.drop(call, result)
            return
        compute = self.compute_seconds(call, key) * float(self.rng.lognormal(0.0, NOISE))
        start = max(call.at + there.seconds(model.input_bytes), self.free_at[key])
        self.free_at[key] = start + compute
        done = start + compute + back.seconds(model.output_bytes)
        latency = done - call.at
        result.stream.append(call.stream)
        result.latency.append(latency)
        result.met.append(latency <= call.deadline_s)
        result.tier.append(self.tier_of[key[0]])
        result.cost += compute * self.scenario.price_per_s.get(key[1], 0.0)

    def run_split(self, call: Call, split: _Split, result: Result) -> None:
        model = self.scenario.models[call.model]
        cut = model.cuts[split.cut]
        (h_site, _), (t_site, _) = split.head, split.tail
        paths = (
            self.costs.metrics(call.origin, h_site),
            self.costs.metrics(h_site, t_site),
            self.costs.metrics(t_site, call.origin),
        )
        if any(p is None for p in paths):
            self.drop(call, result)
            return
        there, across, back = paths
        assert there is not None and across is not None and back is not None
        noise = float(self.rng.lognormal(0.0, NOISE))
        head_s = cut.head_flops / model.flops * self.compute_seconds(call, split.head) * noise
        tail_s = (1 - cut.head_flops / model.flops) * self.compute_seconds(call, split.tail)
        tail_s *= noise
        start = max(call.at + there.seconds(model.input_bytes), self.free_at[split.head])
        self.free_at[split.head] = start + head_s
        arrive = start + head_s + across.seconds(cut.activation_bytes)
        tail_start = max(arrive, self.free_at[split.tail])
        self.free_at[split.tail] = tail_start + tail_s
        latency = tail_start + tail_s + back.seconds(model.output_bytes) - call.at
        result.stream.append(call.stream)
        result.latency.append(latency)
        result.met.append(latency <= call.deadline_s)
        result.tier.append(f"{self.tier_of[h_site]}+{self.tier_of[t_site]}")
        result.cost += head_s * self.scenario.price_per_s.get(split.head[1], 0.0)
        result.cost += tail_s * self.scenario.price_per_s.get(split.tail[1], 0.0)

    @staticmethod
    def drop(call: Call, result: Result) -> None:
        result.stream.append(call.stream)
        result.latency.append(math.inf)
        result.met.append(False)
        result.tier.append("dropped")


@dataclass(frozen=True)
class _Split:
    """A call split: the cut of its model, the head's and the tail's devices."""

    cut: int
    head: tuple[str, str]
    tail: tuple[str, str]


Policy = Callable[[_World, Call, int], "tuple[str, str] | _Split | None"]


def _placed(world: _World, call: Call, number: int, **fields: Any) -> tuple[str, str] | None:
    result = plan(world.snapshot(call.at), [world.job(call, number, **fields)], config=_CONFIG)
    if result.placements:
        p = result.placements[0]
        return (p.node_id, p.device_id)
    if result.deadline_unreachable:  # nowhere in time: where it finishes first, anyway
        return _placed(world, call, number, deadline_s=call.deadline_s, best_effort=True)
    return None


def _anypu(world: _World, call: Call, number: int) -> tuple[str, str] | None:
    return _placed(world, call, number, deadline_s=call.deadline_s)


def _anypu_split(world: _World, call: Call, number: int) -> tuple[str, str] | _Split | None:
    model = world.scenario.models[call.model]
    if model.cuts:
        job = world.job(call, number, deadline_s=call.deadline_s)
        candidates = [
            SplitCandidate(
                cut.after,
                replace(job, flops=cut.head_flops, output_bytes=cut.activation_bytes),
                replace(job, flops=model.flops - cut.head_flops, input_bytes=cut.activation_bytes),
            )
            for cut in model.cuts
        ]
        choice = choose_split(world.snapshot(call.at), job, candidates, _CONFIG)
        if choice is not None:
            head = (choice.head_node, choice.head_device)
            return _Split(choice.index, head, (choice.tail_node, choice.tail_device))
    return _anypu(world, call, number)


def _tier_only(tier: str) -> Policy:
    def policy(world: _World, call: Call, number: int) -> tuple[str, str] | None:
        return _placed(world, call, number, tiers=frozenset({tier}))

    return policy


def _candidates(world: _World, call: Call) -> list[tuple[float, str, str]]:
    """(path latency from the origin, node, device) of every device that can hold it."""
    ok = world.allowed(call)
    out = []
    for i, dv in enumerate(world.ctx.table.devices):
        if ok[i]:
            path = world.costs.metrics(call.origin, dv.node_id)
            if path is not None:
                out.append((path.latency_s, dv.node_id, dv.device.device_id))
    return out


def _nearest_first(world: _World, call: Call, number: int) -> tuple[str, str] | None:
    found = _candidates(world, call)
    if not found:
        return None
    nearest = min(latency for latency, _, _ in found)
    here = [(n, d) for latency, n, d in found if latency == nearest]
    return min(here, key=lambda key: world.free_at[key])


def _ray_hybrid(world: _World, call: Call, number: int) -> tuple[str, str] | None:
    found = _candidates(world, call)
    if not found:
        return None
    by_node: dict[str, list[tuple[str, str]]] = {}
    for _, n, d in sorted(found):
        by_node.setdefault(n, []).append((n, d))

    def busy(node: str) -> float:
        keys = by_node[node]
        return sum(world.free_at[k] > call.at for k in keys) / len(keys)

    local = call.origin if call.origin in by_node else min(found)[1]
    if busy(local) < 0.5:
        node = local
    else:
        spread = sorted(by_node, key=lambda n: (busy(n), n))[:3]
        node = random.Random(number).choice(spread)
    return min(by_node[node], key=lambda key: world.free_at[key])


POLICIES: dict[str, Policy] = {
    "anypu": _anypu,
    "cloud-only": _tier_only("cloud"),
    "edge-only": _tier_only("edge"),
    "nearest-first": _nearest_first,
    "ray-hybrid": _ray_hybrid,
    "anypu+split": _anypu_split,
}


def replay(
    scenario: Scenario,
    calls: Sequence[Call],
    policy: str,
    seed: int,
    progress: Callable[[int, int], object] | None = None,
) -> Result:
    """Run every call through ``policy`` (``POLICIES``) on a fresh cluster."""
    world = _World(scenario, seed)
    choose = POLICIES[policy]
    result = Result(policy)
    for number, call in enumerate(calls):
        key = choose(world, call, number)
        if key is None:
            world.drop(call, result)
        elif isinstance(key, _Split):
            world.run_split(call, key, result)
        else:
            world.run(call, key, result)
        if progress is not None and ((number + 1) % 500 == 0 or number + 1 == len(calls)):
            progress(number + 1, len(calls))
    return result


def whole_call_bound(scenario: Scenario, calls: Sequence[Call], seed: int) -> Result:
    """Each call as if it had the cluster to itself, on the device that would finish it
    first: the most any whole-call policy can meet (``Result.met``; latency is that
    device's, no cost counted)."""
    world = _World(scenario, seed)
    result = Result("whole-call bound")
    for call in calls:
        model = world.scenario.models[call.model]
        noise = float(world.rng.lognormal(0.0, NOISE))
        best, tier = math.inf, "dropped"
        ok = world.allowed(call)
        for i, dv in enumerate(world.ctx.table.devices):
            if not ok[i]:
                continue
            there = world.costs.metrics(call.origin, dv.node_id)
            back = world.costs.metrics(dv.node_id, call.origin)
            if there is None or back is None:
                continue
            latency = (
                there.seconds(model.input_bytes)
                + world.compute_seconds(call, dv.key) * noise
                + back.seconds(model.output_bytes)
            )
            if latency < best:
                best, tier = latency, world.tier_of[dv.node_id]
        result.stream.append(call.stream)
        result.latency.append(best)
        result.met.append(best <= call.deadline_s)
        result.tier.append(tier)
    return result
