"""The live placement core: filters, terms, the greedy and CP-SAT solvers, fallbacks."""

from __future__ import annotations

import random

import numpy as np
import pytest

from anypu.devices import Device
from anypu.errors import ConfigError
from anypu.placement import (
    DEFAULT_FILTERS,
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    PlanContext,
    build_network,
    plan,
)

GiB = 2**30
# Exact arithmetic in crafted cases: no overheads, full efficiency, no tie-breaker.
EXACT = PlacementConfig(
    efficiency={"cpu": 1.0, "gpu": 1.0},
    launch_overhead_s=0.0,
    load_overhead_s=0.0,
    fragmentation_s=0.0,
    num_workers=1,
)


def device(
    device_id: str,
    kind: str = "gpu",
    tflops: float = 10.0,
    memory_gib: float = 16,
    slices: int = 1,
    model: str | None = None,
) -> Device:
    return Device(
        device_id=device_id,
        kind=kind,
        vendor="test",
        model=model or f"{kind}-{tflops:g}",
        memory_bytes=int(memory_gib * GiB),
        tflops=tflops,
        torch_device="cpu",
        slices=slices,
    )


def node(
    node_id: str,
    *devices: Device,
    tier: str = "cloud",
    site: str = "",
    healthy: bool = True,
    warm: tuple[str, ...] = (),
    busy: dict[str, tuple[float, ...]] | None = None,
) -> NodeView:
    busy = busy or {}
    views = tuple(DeviceView(node_id, d, busy.get(d.device_id, (0.0,) * d.slices)) for d in devices)
    return NodeView(node_id, tier, site, healthy, {}, views, frozenset(warm))


def job(job_id: str = "j", **kw: object) -> JobRequest:
    fields: dict[str, object] = {
        "artifact_digest": "model",
        "flops": 1e12,
        "memory_bytes": GiB,
        "input_bytes": 0,
        "output_bytes": 0,
    }
    fields.update(kw)
    return JobRequest(job_id=job_id, **fields)  # type: ignore[arg-type]


def where(p: object, job_id: str) -> tuple[str, str, int]:
    pl = next(x for x in p.placements if x.job_id == job_id)  # type: ignore[attr-defined]
    return pl.node_id, pl.device_id, pl.slice_index


# --- filters --------------------------------------------------------------------------


def test_unschedulable_job_lists_a_reason_for_every_node() -> None:
    snap = ClusterSnapshot(
        (
            node("lost", device("gpu0"), healthy=False),
            node("edge1", device("gpu0"), tier="edge"),
            node("small", device("cpu0", kind="cpu", memory_gib=8), device("gpu0", memory_gib=2)),
            node("sliced", device("gpu0", memory_gib=16, slices=8)),
            node("empty"),
        )
    )
    j = job(
        "big",
        memory_bytes=int(3.2 * GiB),
        device_kinds=frozenset({"gpu"}),
        tiers=frozenset({"cloud"}),
    )
    p = plan(snap, [j])
    assert p.placements == ()
    assert p.unschedulable["big"] == {
        "lost": "node unhealthy (lost)",
        "edge1": "tier edge not in [cloud]",
        "small": "cpu0: device kind cpu not allowed (job allows: gpu); "
        "gpu0: needs 3.2 GiB, slice has 2.0 GiB",
        "sliced": "gpu0: needs 3.2 GiB, slice has 2.0 GiB (16.0 GiB in 8 slices; use fewer slices)",
        "empty": "node has no devices",
    }


def test_device_without_throughput_needs_a_measurement() -> None:
    snap = ClusterSnapshot((node("n", device("npu0", kind="npu", tflops=0.0, model="X1")),))
    p = plan(snap, [job()])
    assert "no measured run on X1" in p.unschedulable["j"]["n"]
    assert where(plan(snap, [job(measured_seconds={"X1": 0.3})]), "j") == ("n", "npu0", 0)


def test_node_site_and_reachability_reasons() -> None:
    net = build_network(
        {
            "sites": ["home", "far", "cloud"],
            "links": [{"a": "home", "b": "cloud", "latency_ms": 5, "bandwidth_mbps": 100}],
        }
    )
    snap = ClusterSnapshot(
        (node("a", device("g"), site="far"), node("b", device("g"), site="cloud")), net
    )
    p = plan(snap, [job(origin="home", nodes=frozenset({"a"}))])
    assert p.unschedulable["j"] == {
        "a": "site far unreachable from origin home",
        "b": "node b not in [a]",
    }
    p = plan(snap, [job(origin="home", sites=frozenset({"far"}))])
    assert p.unschedulable["j"]["b"] == "site cloud not in [far]"


def test_model_source_must_reach_a_cold_node_but_not_a_warm_one() -> None:
    net = build_network(
        {
            "sites": ["home", "scheduler"],
            "links": [],
        }
    )
    cold = ClusterSnapshot((node("n", device("g"), site="home"),), net)
    p = plan(cold, [job(origin="home")])
    assert "unreachable from scheduler" in p.unschedulable["j"]["n"]
    warm = ClusterSnapshot((node("n", device("g"), site="home", warm=("model",)),), net)
    assert where(plan(warm, [job(origin="home")]), "j") == ("n", "g", 0)


def test_filter_masks_agree_with_their_reasons() -> None:
    """Each filter's vector fast path is the same rule as its per-device check."""
    rng = random.Random(7)
    net = build_network(
        {
            "sites": ["s0", "s1", "s2", "s3", "scheduler"],
            "links": [
                {"a": "s0", "b": "s1", "latency_ms": 1, "bandwidth_mbps": 10},
                {"a": "s1", "b": "scheduler", "latency_ms": 1, "bandwidth_mbps": 10},
            ],
        }
    )
    for _ in range(40):
        nodes = []
        for n in range(rng.randint(1, 6)):
            devs = [
                device(
                    f"d{k}",
                    kind=rng.choice(["cpu", "gpu", "npu"]),
                    tflops=rng.choice([0.0, 1.0, 50.0]),
                    memory_gib=rng.choice([1, 8, 40]),
                    slices=rng.choice([1, 2, 4]),
                )
                for k in range(rng.randint(0, 3))
            ]
            nodes.append(
                node(
                    f"n{n}",
                    *devs,
                    tier=rng.choice(["cloud", "edge", "device"]),
                    site=rng.choice(["s0", "s1", "s2", "s3", "nowhere"]),
                    healthy=rng.random() > 0.2,
                    warm=("model",) if rng.random() > 0.5 else (),
                )
            )
        snap = ClusterSnapshot(tuple(nodes), net if rng.random() > 0.3 else None)
        j = job(
            memory_bytes=rng.choice([GiB // 2, 3 * GiB, 30 * GiB]),
            origin=rng.choice(["s0", "s2", "", "unknown"]),
            device_kinds=frozenset(rng.sample(["cpu", "gpu", "npu"], rng.randint(0, 2))),
            tiers=frozenset(rng.sample(["cloud", "edge", "device"], rng.randint(0, 2))),
            sites=frozenset(rng.sample(["s0", "s1", "s2"], rng.randint(0, 2))),
            nodes=frozenset(rng.sample(["n0", "n1", "n9"], rng.randint(0, 2))),
            measured_seconds={"cpu-0": 1.0} if rng.random() > 0.5 else {},
        )
        ctx = PlanContext(snap, PlacementConfig())
        for f in DEFAULT_FILTERS:
            mask = f.mask(j, ctx)
            checks = [
                f.check(j, snap.nodes[ctx.table.dev_node[d]], dv, ctx) is None
                for d, dv in enumerate(ctx.table.devices)
            ]
            assert mask.tolist() == checks, f.name


# --- terms ----------------------------------------------------------------------------


def three_sites() -> ClusterSnapshot:
    net = build_network(
        {
            "sites": ["phone", "edge", "cloud"],
            "links": [
                {"a": "phone", "b": "edge", "latency_ms": 20, "bandwidth_mbps": 10},
                {"a": "edge", "b": "cloud", "latency_ms": 30, "bandwidth_mbps": 1000},
            ],
        }
    )
    return ClusterSnapshot(
        (
            node("handset", device("cpu0", kind="cpu", tflops=0.1), tier="device", site="phone"),
            node("dc", device("gpu0", tflops=100.0, memory_gib=80), site="cloud"),
        ),
        net,
    )


def test_small_model_stays_on_the_local_device() -> None:
    p = plan(three_sites(), [job(flops=1e8, input_bytes=10**6, output_bytes=10**4, origin="phone")])
    assert where(p, "j")[0] == "handset"
    assert p.placements[0].terms["transfer"] == 0.0


def test_big_compute_goes_to_the_cloud_gpu_and_pays_the_transfer() -> None:
    p = plan(
        three_sites(), [job(flops=1e14, input_bytes=10**6, output_bytes=10**4, origin="phone")]
    )
    assert where(p, "j")[0] == "dc"
    terms = p.placements[0].terms
    # in: 50 ms + 1 MB at the 1.25 MB/s bottleneck; out: 50 ms + 10 kB.
    assert terms["transfer"] == pytest.approx(0.05 + 0.8 + 0.05 + 0.008)
    assert terms["compute"] == pytest.approx(1e14 / (100e12 * 0.35) + 0.002)


def test_warm_node_wins_between_identical_nodes() -> None:
    snap = ClusterSnapshot((node("cold", device("g")), node("warm", device("g"), warm=("model",))))
    p = plan(snap, [job(artifact_bytes=500 * 10**6)])
    assert where(p, "j")[0] == "warm"
    assert p.placements[0].terms["warm"] == 0.0
    cold_cost = plan(ClusterSnapshot((node("cold", device("g")),)), [job(artifact_bytes=5 * 10**8)])
    assert cold_cost.placements[0].terms["warm"] == pytest.approx(0.05 + 0.5)


def test_measured_time_is_used_and_scaled_by_slicing() -> None:
    snap = ClusterSnapshot((node("n", device("g", slices=4, model="A100")),))
    p = plan(snap, [job(measured_seconds={"A100": 0.25})])
    assert p.placements[0].terms["compute"] == pytest.approx(1.0)


def test_slo_violation_is_recorded_but_the_job_is_placed() -> None:
    snap = ClusterSnapshot((node("n", device("c", kind="cpu", tflops=1.0)),))
    p = plan(snap, [job(flops=1e13, slo_seconds=1.0)], config=EXACT)
    (pl,) = p.placements
    assert pl.predicted_seconds == pytest.approx(10.0)
    assert pl.terms["slo_violation"] == pytest.approx(9.0)
    ok = plan(snap, [job(flops=1e11, slo_seconds=1.0)], config=EXACT)
    assert "slo_violation" not in ok.placements[0].terms


def test_packing_prefers_a_partly_used_device() -> None:
    busy = {"g": (3.0, 0.0)}
    snap = ClusterSnapshot(
        (node("idle", device("g", slices=2)), node("used", device("g", slices=2), busy=busy))
    )
    p = plan(snap, [job()])
    assert where(p, "j") == ("used", "g", 1)


# --- solver ---------------------------------------------------------------------------


def test_single_job_takes_the_fast_path() -> None:
    snap = ClusterSnapshot(tuple(node(f"n{i}", device("g", tflops=10 + i)) for i in range(10)))
    p = plan(snap, [job()])
    assert p.solver == "single"
    assert where(p, "j")[0] == "n9"


def test_queueing_spreads_a_batch_over_identical_slices() -> None:
    snap = ClusterSnapshot((node("n", device("g", slices=2)),))
    p = plan(snap, [job("a"), job("b")], config=EXACT)
    assert {where(p, "a")[2], where(p, "b")[2]} == {0, 1}
    assert all(pl.terms["queue"] == 0.0 for pl in p.placements)


def test_existing_busy_time_counts_as_queue() -> None:
    snap = ClusterSnapshot(
        (node("busy", device("g", tflops=20), busy={"g": (5.0,)}), node("free", device("g")))
    )
    p = plan(snap, [job(flops=1e13)], config=EXACT)
    assert where(p, "j")[0] == "free"  # 1 s on the slow GPU beats 5 s + 0.5 s


def crafted_batch() -> tuple[ClusterSnapshot, list[JobRequest]]:
    """Greedy sends the small job to the fast GPU, and the big job then queues behind it.

    a: 1 s on gpu, 1.5 s on cpu; b: 10 s on gpu, 15 s on cpu. Greedy: a→gpu (1),
    b→gpu (1 + 10) = 12. Best: a→cpu (1.5), b→gpu (10) = 11.5.
    """
    snap = ClusterSnapshot(
        (node("n", device("gpu0", tflops=1.0), device("cpu0", kind="cpu", tflops=1 / 1.5)),)
    )
    return snap, [job("a", flops=1e12), job("b", flops=1e13)]


def test_cpsat_beats_the_myopic_greedy() -> None:
    snap, jobs = crafted_batch()
    greedy = plan(snap, jobs, config=PlacementConfig(**{**vars(EXACT), "use_cpsat": False}))
    assert greedy.solver == "greedy"
    assert greedy.objective == pytest.approx(12.0)
    best = plan(snap, jobs, config=EXACT)
    assert best.solver == "cp-sat:OPTIMAL"
    assert best.objective == pytest.approx(11.5)
    assert best.objective < greedy.objective
    assert where(best, "a")[1] == "cpu0" and where(best, "b")[1] == "gpu0"


def test_time_limit_falls_back_to_greedy_and_says_so() -> None:
    snap = ClusterSnapshot(tuple(node(f"n{i}", device("g", tflops=10 + i)) for i in range(30)))
    jobs = [job(f"j{i}", flops=1e12 * (1 + i % 7)) for i in range(120)]
    fast = PlacementConfig(**{**vars(EXACT), "time_limit_s": 1e-9})
    p = plan(snap, jobs, config=fast)
    assert p.solver.startswith("greedy (cp-sat UNKNOWN")
    only_greedy = plan(snap, jobs, config=PlacementConfig(**{**vars(EXACT), "use_cpsat": False}))
    assert p.placements == only_greedy.placements
    assert len(p.placements) == 120


def test_higher_priority_job_gets_the_contended_slice() -> None:
    snap = ClusterSnapshot((node("n", device("fast", tflops=100.0), device("slow", tflops=1.0)),))
    jobs = [job("low", flops=1e11), job("high", flops=1e13, priority=5)]
    p = plan(snap, jobs, config=EXACT)
    assert where(p, "high")[1] == "fast"
    assert p.placements[0].job_id == "high"  # round order: priority first


def test_unschedulable_and_placeable_jobs_in_one_batch() -> None:
    snap = ClusterSnapshot((node("n", device("g", memory_gib=4)),))
    p = plan(snap, [job("fits"), job("huge", memory_bytes=64 * GiB)])
    assert [pl.job_id for pl in p.placements] == ["fits"]
    assert set(p.unschedulable) == {"huge"}
    assert p.deferred == ()


def test_plans_are_deterministic() -> None:
    rng = np.random.default_rng(3)
    snap = ClusterSnapshot(
        tuple(
            node(f"n{i}", device("g", tflops=float(rng.choice([10, 50])), slices=2))
            for i in range(8)
        )
    )
    jobs = [job(f"j{i}", flops=float(10 ** rng.uniform(11, 14))) for i in range(12)]
    first, second = plan(snap, jobs), plan(snap, jobs)
    # Proven optimal, so two CP-SAT workers racing cannot change the answer.
    assert "OPTIMAL" in first.solver
    assert first.placements == second.placements
    assert first.objective == second.objective


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_limit_s": 0}, "time_limit_s must be > 0"),
        ({"top_k": 0}, "top_k"),
        ({"num_workers": 8}, "num_workers must be 1 or 2"),
        ({"weights": {"latency": 1.0}}, "unknown term.*latency"),
        ({"efficiency": {"gpu": 1.5}}, r"efficiency\['gpu'\]"),
        ({"policy": "fastest"}, "policy 'fastest' is unknown"),
    ],
)
def test_config_mistakes_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PlacementConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_jobs_are_rejected_with_the_field_named() -> None:
    snap = ClusterSnapshot((node("n", device("g")),))
    with pytest.raises(ValueError, match="appears twice"):
        plan(snap, [job("a"), job("a")])
    with pytest.raises(ValueError, match="'a': flops must be finite"):
        plan(snap, [job("a", flops=-1.0)])


def test_busy_vector_is_padded_or_trimmed_to_the_slice_count() -> None:
    short = node("short", device("g", slices=3), busy={"g": (4.0,)})
    long = node("long", device("g", slices=1), busy={"g": (2.0, 9.0)})
    table = PlanContext(ClusterSnapshot((short, long)), PlacementConfig()).table
    assert table.slice_busy.tolist() == [4.0, 0.0, 0.0, 2.0]
    assert table.slice_pos.tolist() == [0, 1, 2, 0]
    assert table.dev_idle.tolist() == [False, False]


def test_tables_of_one_layout_share_its_columns_but_not_the_round_state() -> None:
    gpu, cpu = device("g", slices=2), device("c", kind="cpu")
    before = ClusterSnapshot((node("a", gpu, cpu), node("b", cpu, healthy=False)))
    after = ClusterSnapshot(
        (node("a", gpu, cpu, busy={"g": (0.0, 3.0)}, warm=("m",)), node("b", cpu))
    )
    first = PlanContext(before, PlacementConfig()).table
    second = PlanContext(after, PlacementConfig()).table
    assert second.dev_slices is first.dev_slices  # one layout, built once
    assert not second.dev_slices.flags.writeable
    assert first.slice_busy.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert second.slice_busy.tolist() == [0.0, 3.0, 0.0, 0.0]
    assert first.node_healthy.tolist() == [True, False]
    assert second.node_healthy.tolist() == [True, True]
    assert second.dev_idle.tolist() == [False, True, True] and first.dev_idle.all()
    assert second.warm_nodes == {"m": [0]} and first.warm_nodes == {}
    # Another device on a node, or the same node at another site, is another layout.
    grown = PlanContext(ClusterSnapshot((node("a", gpu, cpu, device("h")),)), EXACT).table
    moved = PlanContext(ClusterSnapshot((node("a", gpu, cpu, site="s2"),)), EXACT).table
    assert grown.n_devices == 3 and grown.dev_slices is not first.dev_slices
    assert moved.sites == ["s2"]
