"""``anypu status``: the terminal summary and its ``--json`` document (pure formatting)."""

from __future__ import annotations

import json

from anypu.protos import messages as m
from anypu.scheduler import cluster_usage
from anypu.sdk._status import format_status, status_document
from tests.unit.test_http_api import CPU, GPU, NPU


def nodes() -> list[m.NodeInfo]:
    return [
        m.NodeInfo("edge-1", "edge", "shop", "ready", devices=(NPU,), last_heartbeat_age_s=0.2),
        m.NodeInfo("cloud-1", "cloud", "dc", "ready", devices=(GPU,), warm_digests=("d",)),
        m.NodeInfo("phone-1", "device", "home", "lost", devices=(CPU,), last_heartbeat_age_s=9),
    ]


def jobs() -> tuple[list[m.JobInfo], list[m.JobInfo]]:
    on_npu = m.PlacementInfo("edge-1", "npu0", 2, 0.1)
    running = m.JobInfo("job-run", "running", "resnet", placement=on_npu)
    queued = m.JobInfo("job-queued", "placed", "resnet", placement=on_npu)  # same slice
    stuck = m.JobInfo(
        "job-stuck",
        "pending",
        "big",
        unschedulable=True,
        pending_reasons={"cloud-1": "needs 90 GiB, gpu0 has 40 GiB", "edge-1": "kind npu"},
    )
    done = m.JobInfo("job-done", "succeeded", "resnet")
    failed = m.JobInfo("job-bad", "failed", "resnet")
    return [stuck, done, failed], [stuck, running, queued]


def usage(live: list[m.JobInfo]) -> m.ClusterUsage:
    """What the scheduler answers ``Usage`` with, for these nodes and live jobs."""
    return cluster_usage(nodes(), [j.placement for j in live if j.state != "pending"])


def test_status_reads_like_ray_status():
    recent, live = jobs()
    text = format_status("127.0.0.1:7070", nodes(), recent, live, usage(live))
    lines = text.splitlines()
    assert lines[0] == "======== anypu status: scheduler 127.0.0.1:7070 ========"
    # tiers in network order, whatever order the nodes came in
    assert text.index("cloud (1)") < text.index("edge (1)") < text.index("device (1): 1 lost")
    assert "npu0   npu huawei 310P 8.0 GiB 22 TFLOPS ×4 slices (simulated on cpu)" in text
    assert "[1/4 slices reserved]" in text  # two jobs queue on one slice
    assert "1 warm model\n" in text
    section = text[text.index("Usage") : text.index("Jobs")]
    assert "edge   npu  1 device, 1 simulated" in section
    assert "1/4 slices   2.0 GiB/8.0 GiB memory   5.5/22.0 TFLOPS" in section
    assert "cpu" not in section  # the lost phone holds no capacity
    assert " live: 1 pending, 1 placed, 1 running" in text
    assert " last 3: 1 succeeded, 1 failed, 0 cancelled" in text
    pending = text[text.index("Pending") :]
    assert "job-stuck big (unschedulable: no node can hold it)" in pending
    assert "   cloud-1: needs 90 GiB, gpu0 has 40 GiB" in pending


def test_status_with_no_nodes_says_how_to_add_one():
    text = format_status("h:1", [], [])
    assert "anypu agent --scheduler" in text and "(no ready nodes)" in text


def test_json_document_has_usage_and_pending_and_is_serialisable():
    recent, live = jobs()
    doc = json.loads(json.dumps(status_document("h:1", nodes(), recent, live, usage(live))))
    assert [n["node_id"] for n in doc["nodes"]] == ["edge-1", "cloud-1", "phone-1"]
    edge = next(u for u in doc["usage"] if u["tier"] == "edge")
    assert edge["reserved_slices"] == 1 and edge["free_memory_bytes"] == 6 << 30
    assert [j["job_id"] for j in doc["pending"]] == ["job-stuck"]
    assert doc["pending"][0]["pending_reasons"]["edge-1"] == "kind npu"
    assert 0 < doc["fragmentation"] < 1


def test_status_shows_a_shared_device_s_reservations_seat_by_seat():
    from anypu.devices import with_shares

    gib = 1 << 30
    shared = with_shares(GPU, 4)
    held = (
        m.Reservation("job-a", shared.device_id, 0, 6 * gib, 150),
        m.Reservation("job-b", shared.device_id, 2, 2 * gib, 400),
    )
    node = m.NodeInfo("cloud-1", "cloud", "dc", "ready", devices=(shared,), reservations=held)
    text = format_status("h:1", [node], [])
    free = (shared.memory_bytes - 8 * gib) / gib
    assert f"[2/4 seats, 8.0 GiB of {shared.memory_bytes / gib:.1f} GiB and 55% of compute" in text
    assert f"{free:.1f} GiB free" in text
    assert "seat 0: job job-a 6.0 GiB, 15.0% of compute" in text
    assert "seat 2: job job-b 2.0 GiB, 40.0% of compute" in text
