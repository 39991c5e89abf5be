"""Summaries and Prometheus metrics of a scheduler: pure parts and a live registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from anypu.devices import Device
from anypu.protos import messages as m
from anypu.scheduler._metrics import SchedulerMetrics, fragmentation, usage_by_tier_kind
from anypu.scheduler._service import SchedulerService
from anypu.scheduler._state import SchedulerConfig
from tests.unit.test_http_api import CPU, GPU, NPU, TOKEN, Agent, run_one, submit

ROOT = Path(__file__).resolve().parents[2]
SPLIT = Device("gpu1", "gpu", "nvidia", "L4", 24 << 30, 120.0, "cuda:0", slices=2)


def node(node_id: str, tier: str, *devices: Device, state: str = "ready") -> m.NodeInfo:
    return m.NodeInfo(node_id, tier, "", state, devices=devices)


def slot(node_id: str, device_id: str, index: int) -> m.PlacementInfo:
    return m.PlacementInfo(node_id, device_id, index, 0.1)


def test_usage_counts_reserved_slices_memory_and_compute_by_tier_and_kind():
    nodes = [
        node("e1", "edge", NPU),
        node("c1", "cloud", GPU, SPLIT),
        node("gone", "cloud", GPU, state="lost"),
    ]
    # two jobs queue on the same NPU slice: it is one reserved slice, not two
    active = [slot("e1", "npu0", 1), slot("e1", "npu0", 1), slot("c1", "gpu0", 0), None]
    rows = {(r.tier, r.kind): r for r in usage_by_tier_kind(nodes, active)}
    assert list(rows) == [("cloud", "gpu"), ("edge", "npu")]  # lost nodes hold no capacity
    cloud, edge = rows["cloud", "gpu"], rows["edge", "npu"]
    assert (edge.slices, edge.reserved_slices, edge.free_slices) == (4, 1, 3)
    assert edge.reserved_memory_bytes == 2 << 30 and edge.free_tflops == pytest.approx(16.5)
    assert (cloud.devices, cloud.simulated, cloud.slices, cloud.reserved_slices) == (2, 1, 3, 1)
    assert cloud.memory_bytes == (40 + 24) << 30
    assert cloud.reserved_memory_bytes == 40 << 30


def test_fragmentation_is_the_share_of_free_memory_on_partly_reserved_devices():
    nodes = [node("a", "edge", SPLIT), node("b", "edge", CPU)]
    assert fragmentation(nodes, []) == 0.0
    half = fragmentation(nodes, [slot("a", "gpu1", 0)])
    assert half == pytest.approx((12 << 30) / ((12 << 30) + (16 << 30)))
    assert fragmentation(nodes, [slot("a", "gpu1", 0), slot("a", "gpu1", 1)]) == 0.0
    everything = [slot("a", "gpu1", 0), slot("a", "gpu1", 1), slot("b", "cpu0", 0)]
    assert fragmentation(nodes, everything) == 0.0  # nothing free: nothing to fragment


def samples(metrics: SchedulerMetrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture()
def live(tmp_path: Path):
    service = SchedulerService(tmp_path, TOKEN, SchedulerConfig(unschedulable_timeout_s=3600))
    metrics = SchedulerMetrics(service)
    agents = {
        "cloud-1": Agent(service, "cloud-1", "cloud", "", GPU),
        "edge-1": Agent(service, "edge-1", "edge", "", NPU),
        "phone-1": Agent(service, "phone-1", "device", "", CPU),
    }
    yield service, metrics, agents, service.blobs.put(b"artifact")
    service.close()


def test_scrape_reports_nodes_devices_jobs_and_transitions(live):
    service, metrics, agents, digest = live
    run_one(service, agents, digest, tiers=("edge",))
    run_one(service, agents, digest, tiers=("edge",))
    submit(service, digest, tiers=("cloud",))  # placed, not finished
    submit(service, digest, device_kinds=("tpu",))  # unschedulable
    got = samples(metrics)
    assert got["anypu_nodes", (("state", "ready"), ("tier", "edge"))] == 1
    assert got["anypu_nodes", (("state", "lost"), ("tier", "cloud"))] == 0
    key = (("kind", "npu"), ("simulated", "true"), ("tier", "edge"), ("vendor", "huawei"))
    assert got["anypu_devices", key] == 1
    reserved = (("kind", "gpu"), ("state", "reserved"), ("tier", "cloud"))
    assert got["anypu_device_memory_bytes", reserved] == 40 << 30
    assert got["anypu_device_slices", (("kind", "npu"), ("state", "free"), ("tier", "edge"))] == 4
    assert got["anypu_jobs", (("state", "pending"),)] == 1
    assert got["anypu_jobs", (("state", "placed"),)] == 1
    assert got["anypu_queue_depth", ()] == 1 and got["anypu_jobs_unschedulable", ()] == 1
    assert got["anypu_placement_decisions_total", (("outcome", "placed"),)] == 3
    assert got["anypu_placement_decisions_total", (("outcome", "unschedulable"),)] >= 1
    assert got["anypu_jobs_finished_total", (("state", "succeeded"), ("tier", "edge"))] == 2
    assert got["anypu_job_latency_seconds_count", (("tier", "edge"),)] == 2
    assert got["anypu_job_queue_wait_seconds_count", (("tier", "edge"),)] == 2
    assert got["anypu_job_queue_wait_seconds_count", (("tier", "cloud"),)] == 1
    solves = sum(v for (n, _), v in got.items() if n == "anypu_placement_solve_seconds_count")
    assert solves >= 4  # one round per submit at least
    assert got["anypu_node_heartbeat_age_seconds", (("node", "phone-1"), ("tier", "device"))] >= 0
    assert got["anypu_fragmentation_ratio", ()] == 0.0  # cloud GPU is whole; NPU all free
    assert got["anypu_placement_rate", ()] == pytest.approx(3 / 60)


def test_every_metric_is_prefixed_and_no_label_carries_a_job_id(live):
    service, metrics, agents, digest = live
    jobs = [run_one(service, agents, digest).job_id for _ in range(3)]
    submit(service, digest, device_kinds=("tpu",))
    families = list(text_string_to_metric_families(metrics.render().decode()))
    assert families and all(f.name.startswith("anypu_") for f in families)
    values = {v for f in families for s in f.samples for v in s.labels.values()}
    assert not any(v.startswith("job-") for v in values)
    assert not values & set(jobs)


def test_a_cancelled_pending_job_is_counted_once_and_forgotten(live):
    service, metrics, _, digest = live
    stuck = submit(service, digest, device_kinds=("tpu",))
    service.cancel(stuck.job_id)
    got = samples(metrics)
    assert got["anypu_jobs_finished_total", (("state", "cancelled"), ("tier", "none"))] == 1
    assert metrics.transitions._queued_at == {}
    assert metrics.transitions.finished_counts == {"cancelled": 1}


def test_the_grafana_dashboard_queries_only_metrics_the_scheduler_exports(live):
    service, metrics, agents, digest = live
    run_one(service, agents, digest)
    service.cancel(submit(service, digest, device_kinds=("tpu",)).job_id)
    exported = {
        s.name for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples
    }
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "anypu.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for e in exprs for name in re.findall(r"\banypu_[a-z_]+", e)}
    assert len(used) >= 12
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_deadlines_met_missed_and_unreachable_are_counted_per_tier(live):
    service, metrics, agents, digest = live
    met = run_one(service, agents, digest, tiers=("edge",), deadline_ms=60_000)
    assert met.deadline_ms == 60_000 and met.deadline_met is True
    late = submit(service, digest, tiers=("cloud",), deadline_ms=60_000)
    launch = next(x for x in agents["cloud-1"].launches() if x.job_id == late.job_id)
    service.state.jobs[late.job_id].submitted_at -= 61.0  # it took 61 s, by the record
    agents["cloud-1"].finish(launch)
    assert service.job_info(late.job_id).deadline_met is False
    never = submit(service, digest, tiers=("edge",), deadline_ms=1e-3)  # 1 µs: nowhere
    info = service.job_info(never.job_id)
    assert info.state == "failed" and info.outcome.code is m.FailureCode.DEADLINE_UNREACHABLE
    assert info.outcome.message.startswith("DeadlineUnreachable: no device is predicted")
    assert "best is edge-1/npu0 (edge) at" in info.outcome.message
    got = samples(metrics)
    for tier, outcome in (("edge", "met"), ("cloud", "missed"), ("edge", "unreachable")):
        assert got["anypu_deadline_jobs_total", (("outcome", outcome), ("tier", tier))] == 1
    assert got["anypu_deadline_jobs_total", (("outcome", "met"), ("tier", "cloud"))] == 0
