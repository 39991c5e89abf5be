"""The gpushare placement policies placing live jobs (``placement._live_policy``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anypu import PROTOCOL_VERSION
from anypu._cli import main
from anypu.devices import Device
from anypu.errors import ConfigError
from anypu.placement import (
    POLICY_NAMES,
    ClusterSnapshot,
    PlacementConfig,
    PlanContext,
    WorkloadShape,
    plan,
    workload_shape,
)
from anypu.placement._live_policy import LiveCluster, typical_workload
from anypu.placement.gpushare._policies import TRACE_POLICIES
from anypu.protos import messages as m
from anypu.scheduler._state import (
    AgentConnected,
    JobSubmitted,
    SchedulerConfig,
    SchedulerState,
)
from anypu.sdk._status import format_status
from tests.unit.test_placement_live import GiB, device, job, node, where


def fast(device_id: str = "g0", slices: int = 4) -> Device:
    return device(device_id, tflops=40, slices=slices, model="fast")


def slow(device_id: str = "g0", slices: int = 4, memory_gib: float = 16) -> Device:
    return device(device_id, tflops=10, slices=slices, model="slow", memory_gib=memory_gib)


def policy(name: str, **kw: object) -> PlacementConfig:
    return PlacementConfig(policy=name, **kw)  # type: ignore[arg-type]


HALVES = (WorkloadShape(0, 0, 1, 500),) * 10  # history: jobs that took half a device


def three_nodes(**n2: object) -> ClusterSnapshot:
    """n1: a fast idle GPU. n2: a slow GPU with one of 4 slices free (250 milli) and an
    idle one. n3: a slow GPU with two slices free (500 milli)."""
    return ClusterSnapshot(
        (
            node("n1", fast()),
            node("n2", slow("g0"), slow("g1"), busy={"g0": (1.0, 1.0, 1.0, 0.0)}, **n2),  # type: ignore[arg-type]
            node("n3", slow(), busy={"g0": (1.0, 1.0, 0.0, 0.0)}),
        ),
        workload=HALVES,
    )


# --- which device each policy picks -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cost", ("n1", "g0", 0)),  # 4× faster: least predicted seconds
        ("packing", ("n2", "g0", 3)),  # the fullest shared GPU
        ("fgd", ("n2", "g0", 3)),  # filling it removes 250 fragmented milli
        ("anypu", ("n2", "g0", 3)),
        ("bestfit", ("n3", "g0", 2)),  # least free GPU left on the node
        ("clustering", ("n3", "g0", 2)),  # only sharing pods there, least free
    ],
)
def test_each_policy_picks_its_device(name: str, expected: tuple[str, str, int]) -> None:
    p = plan(three_nodes(), [job()], config=policy(name))
    assert where(p, "j") == expected
    assert p.solver == ("single" if name == "cost" else f"policy:{name}")


def test_policy_placements_carry_the_cost_models_terms() -> None:
    snap = three_nodes()
    chosen = plan(snap, [job(slo_seconds=0.5)], config=policy("bestfit")).placements[0]
    pinned = plan(snap, [job(slo_seconds=0.5, nodes=frozenset({"n3"}))]).placements[0]
    assert (chosen.node_id, chosen.device_id, chosen.slice_index) == ("n3", "g0", 2)
    assert chosen.predicted_seconds == pytest.approx(pinned.predicted_seconds)
    assert chosen.terms == pytest.approx(pinned.terms)
    assert chosen.terms["queue"] == 0.0 and chosen.terms["slo_violation"] > 0


def test_fgd_plans_for_the_workload_the_scheduler_has_seen() -> None:
    """a: 500 milli free on its GPU; b: an idle GPU. A 250-milli job on a leaves 250 that
    a half-device job cannot use, while a whole-device job could use neither GPU's rest."""
    nodes = (node("a", slow(), busy={"g0": (1.0, 1.0, 0.0, 0.0)}), node("b", slow()))
    wholes = (WorkloadShape(0, 0, 1, 1000),) * 3
    for name in ("fgd", "anypu"):
        halves = plan(ClusterSnapshot(nodes, workload=HALVES), [job()], config=policy(name))
        assert where(halves, "j")[0] == "b"
        whole = plan(ClusterSnapshot(nodes, workload=wholes), [job()], config=policy(name))
        assert where(whole, "j")[0] == "a"


def test_default_workload_is_one_pod_per_slice() -> None:
    snap = ClusterSnapshot(
        (node("x", slow("g0", slices=4), fast("g1", slices=1), fast("g2", slices=1)),)
    )
    live = LiveCluster(PlanContext(snap, PlacementConfig()))
    typical = typical_workload((), live)
    assert dict(zip(typical.milli.tolist(), typical.freq.tolist(), strict=True)) == {
        250: pytest.approx(2 / 3),
        1000: pytest.approx(1 / 3),
    }
    cpu_only = (WorkloadShape(1000, 512, 0, 0),) * 5  # no accelerator job yet: still default
    assert typical_workload(cpu_only, live).milli.tolist() == typical.milli.tolist()
    seen = typical_workload((*cpu_only, WorkloadShape(0, 0, 1, 500)), live)
    assert seen.milli.tolist() == [500] and seen.cpu_only_share == pytest.approx(5 / 6)


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if n != "cost"])
def test_a_job_takes_the_smallest_slice_that_holds_it(name: str) -> None:
    """A whole fast GPU (1000 milli) against a quarter of a slow one (250), as MIG-aware
    schedulers pick the smallest profile; a job too big for the quarter takes the whole."""
    snap = ClusterSnapshot(
        (
            node("whole", fast(slices=1)),
            node("shared", slow(), busy={"g0": (1.0, 1.0, 0.0, 0.0)}),
        )
    )
    assert where(plan(snap, [job()], config=policy(name)), "j")[0] == "shared"
    big = job(memory_bytes=6 * GiB)  # over a quarter of the slow GPU (4 of 16 GiB)
    assert where(plan(snap, [big], config=policy(name)), "j")[0] == "whole"


# --- the live filters still decide what is possible ---------------------------------


@pytest.mark.parametrize(
    ("change", "job_fields"),
    [
        ({"tier": "edge"}, {"tiers": frozenset({"cloud"})}),
        ({"healthy": False}, {}),
        ({}, {"nodes": frozenset({"n1", "n3"})}),
        ({"kind": "npu"}, {"device_kinds": frozenset({"gpu", "cpu"})}),
    ],
)
def test_the_policy_only_sees_devices_that_pass_the_filters(
    change: dict[str, str], job_fields: dict[str, object]
) -> None:
    """packing prefers n2's fuller GPU (see above); with n2 filtered out, n3's."""
    snap = three_nodes()
    nodes = list(snap.nodes)
    if "kind" in change:
        npus = tuple(
            dataclasses.replace(dv, device=dataclasses.replace(dv.device, kind=change["kind"]))
            for dv in nodes[1].devices
        )
        nodes[1] = dataclasses.replace(nodes[1], devices=npus)
    else:
        nodes[1] = dataclasses.replace(nodes[1], **change)  # type: ignore[arg-type]
    snap = dataclasses.replace(snap, nodes=tuple(nodes))
    assert where(plan(snap, [job(**job_fields)], config=policy("packing")), "j") == ("n3", "g0", 2)


def test_memory_filter_keeps_a_job_off_small_slices() -> None:
    snap = three_nodes()
    nodes = list(snap.nodes)
    nodes[1] = node(
        "n2",
        slow("g0", memory_gib=2),
        slow("g1", memory_gib=2),
        busy={"g0": (1.0, 1.0, 1.0, 0.0)},
    )
    p = plan(dataclasses.replace(snap, nodes=tuple(nodes)), [job()], config=policy("packing"))
    assert where(p, "j") == ("n3", "g0", 2)  # 1 GiB does not fit a 512 MiB slice


def test_unschedulable_reasons_are_the_cost_models() -> None:
    snap = three_nodes()
    big = job("big", memory_bytes=100 * GiB)
    for name in POLICY_NAMES:
        p = plan(snap, [big, job()], config=policy(name))
        assert p.unschedulable == plan(snap, [big]).unschedulable
        assert [pl.job_id for pl in p.placements] == ["j"]


# --- what stays with the cost model -------------------------------------------------


def test_cpu_only_jobs_keep_the_cost_placement() -> None:
    snap = ClusterSnapshot((node("n", device("cpu0", kind="cpu", slices=2), slow()),))
    jobs = [job("c", device_kinds=frozenset({"cpu"})), job("any")]
    p = plan(snap, jobs, config=policy("fgd"))
    assert where(p, "c")[1] == "cpu0" and where(p, "any")[1] == "g0"
    assert p.solver.startswith("policy:fgd; cost (")
    assert p.solver.endswith(
        "placed 1: 1 cpu-only, 0 with every accelerator slice taken (CPU allowed too)"
    )


def test_a_round_fills_free_slices_then_holds_back_the_rest() -> None:
    snap = ClusterSnapshot((node("n", slow(slices=2)),))
    jobs = [job("a"), job("b"), job("c", priority=1)]
    p = plan(snap, jobs, config=policy("fgd"))
    # The high-priority job is served first; every job gets its own free slice while one is.
    assert {where(p, "c")[2], where(p, "a")[2]} == {0, 1}
    # The third waits, pending, for a slice to free, as the trace model holds a pod.
    assert p.deferred == ("b",) and "b" not in {pl.job_id for pl in p.placements}
    assert p.solver == "policy:fgd; 1 held back until a slice frees"
    assert not p.unschedulable


def test_a_job_that_may_also_use_a_cpu_goes_to_the_cost_model_when_slices_are_taken() -> None:
    cpu = device("cpu0", kind="cpu", slices=1)
    snap = ClusterSnapshot((node("n", slow(slices=1), cpu),))
    jobs = [job("a", priority=1), job("b")]
    p = plan(snap, jobs, config=policy("fgd"))
    assert where(p, "a")[1] == "g0" and where(p, "b") is not None and not p.deferred
    assert "1 with every accelerator slice taken (CPU allowed too)" in p.solver


def test_random_policy_is_reproducible_by_seed() -> None:
    snap = three_nodes()
    picks = {where(plan(snap, [job()], config=policy("random", seed=s)), "j") for s in range(12)}
    assert len(picks) > 1
    again = plan(snap, [job()], config=policy("random", seed=3))
    assert where(again, "j") == where(plan(snap, [job()], config=policy("random", seed=3)), "j")


# --- the cluster model -------------------------------------------------------------


def test_live_nodes_become_gpushare_nodes_of_identical_accelerators() -> None:
    cpu = Device("cpu0", "cpu", "intel", "Xeon", 8 * GiB, 1.0, "cpu", slices=3, threads=2)
    gpus = [slow(f"g{i}") for i in range(10)]
    odd = device("t0", kind="npu", slices=3, model="odd")
    snap = ClusterSnapshot(
        (node("n", cpu, *gpus, odd, busy={"cpu0": (1.0, 0.0, 0.0), "t0": (1.0, 1.0, 0.0)}),)
    )
    live = LiveCluster(PlanContext(snap, PlacementConfig()))
    assert live.nodes.gpus.tolist() == [8, 2, 1]  # 10 identical GPUs in chunks of 8
    assert live.nodes.cpu.tolist() == [6000] * 3  # 3 slices × 2 threads
    assert live.state.cpu_left.tolist() == [4000] * 3
    assert live.nodes.mem.tolist() == [8192] * 3
    assert live.state.mem_left.tolist() == [8192 - 2730] * 3
    t0 = int(np.flatnonzero(live.dev_node == 2)[0])
    assert live.state.gpu_left[2, 0] == 1000 - 2 * 333
    assert live.state.tags[2, 0] == 2  # two sharing pods
    assert live.take(t0) == 2
    assert live.state.gpu_left[2, 0] == 0  # the last slice takes the 1 milli remainder


def test_workload_shapes_and_the_scheduler_history() -> None:
    gpu = slow(slices=4)
    cpu = Device("cpu0", "cpu", "intel", "Xeon", 8 * GiB, 1.0, "cpu", slices=2, threads=2)
    assert workload_shape(gpu) == WorkloadShape(0, 0, 1, 250)
    assert workload_shape(cpu) == WorkloadShape(2000, 4096, 0, 0)
    state = SchedulerState(SchedulerConfig(placement=policy("fgd")))
    state.handle(AgentConnected(m.Join(PROTOCOL_VERSION, "", "n1", "edge", devices=(gpu,)), 0.0))
    request = m.SubmitRequest(artifact_digest="a" * 64, inputs=b"x", flops=1e6, memory_bytes=1)
    state.handle(JobSubmitted("j1", request, now=1.0))
    assert state.jobs["j1"].state == "placed"
    assert state.jobs["j1"].placement.solver == "policy:fgd"
    assert list(state.workload) == [WorkloadShape(0, 0, 1, 250)]
    assert state.snapshot(2.0).workload == (WorkloadShape(0, 0, 1, 250),)


# --- configuration ------------------------------------------------------------------


def test_every_gpushare_policy_is_a_config_choice() -> None:
    assert POLICY_NAMES == ("cost", *(cls.name for cls in TRACE_POLICIES))
    with pytest.raises(ConfigError) as caught:
        PlacementConfig(policy="fastest")
    assert all(name in str(caught.value) for name in POLICY_NAMES)


def test_cli_rejects_an_unknown_policy_and_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scheduler", "--insecure", "--policy", "fastest"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anypu: error: --policy 'fastest' is not a placement policy")
    assert all(name in err for name in POLICY_NAMES)
    with pytest.raises(SystemExit):
        main(["scheduler", "--help"])
    out = capsys.readouterr().out
    assert [name for name in POLICY_NAMES if name not in out] == []


def test_status_names_who_placed_the_newest_job() -> None:
    placed = m.PlacementInfo("n1", "g0", 0, 0.1, solver="policy:fgd")
    older = m.PlacementInfo("n1", "g0", 1, 0.1, solver="single")
    jobs = [
        m.JobInfo("new", "succeeded", placement=placed),
        m.JobInfo("old", "succeeded", placement=older),
    ]
    assert " latest placement by: policy:fgd" in format_status("h:1", [], jobs).splitlines()
    assert "latest placement by" not in format_status("h:1", [], [m.JobInfo("p", "pending")])


def test_the_scheduler_keeps_a_held_back_job_pending_and_places_it_when_a_slice_frees() -> None:
    from anypu import PROTOCOL_VERSION
    from anypu.protos import messages as m
    from anypu.scheduler._state import (
        AgentConnected,
        AgentSaid,
        JobSubmitted,
        SchedulerConfig,
        SchedulerState,
        Send,
        Tick,
    )

    gpu = Device("g0", "gpu", "nvidia", "T4", 16 * GiB, 8.0, "cuda:0", True, 1, 1)
    config = SchedulerConfig(
        unschedulable_timeout_s=0.0, placement=PlacementConfig(policy="anypu-ss")
    )
    state = SchedulerState(config)
    state.handle(AgentConnected(m.Join(PROTOCOL_VERSION, "", "n", "edge", devices=(gpu,)), 0.0))
    request = m.SubmitRequest("a" * 64, b"x", flops=1e6, memory_bytes=1 << 20)

    def launches(actions: list) -> list[str]:
        return [a.message.job_id for a in actions if isinstance(a, Send)]

    assert launches(state.handle(JobSubmitted("first", request, 1.0))) == ["first"]
    assert launches(state.handle(JobSubmitted("second", request, 1.1))) == []
    state.handle(Tick(5.0))  # long past the unschedulable timeout: it fits, so it waits
    assert state.jobs["second"].state == "pending" and state.decisions["deferred"] >= 2
    done = m.JobResult("first", 1, outputs=b"out")
    assert launches(state.handle(AgentSaid("n", 1, done, 5.1))) == ["second"]
    assert state.jobs["second"].placement.solver == "policy:anypu-ss"
