"""Split across tiers: a head on one device and the tail on another, chosen only when the
two are predicted to finish sooner than any one device alone."""

from __future__ import annotations

import dataclasses

import pytest

from anypu.devices import Device
from anypu.placement import (
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    SplitCandidate,
    build_network,
    choose_split,
)

GIB = 1 << 30
MB = 1_000_000
WHOLE, HEAD, TAIL = "w" * 64, "h" * 64, "t" * 64
CONFIG = PlacementConfig(launch_overhead_s=0.0, use_cpsat=False)


def _network(uplink_mbps: float) -> object:
    # The phone's radio uplink is the narrow link: 20 ms, uplink_mbps megabits per second.
    return build_network(
        {
            "sites": ["phone", "cloud"],
            "links": [
                {"a": "phone", "b": "cloud", "latency_ms": 20, "bandwidth_mbps": uplink_mbps}
            ],
        }
    )


# 1 GFLOP takes 1 s on the phone's CPU and 1 ms on the cloud's GPU.
PHONE_CPU = Device("cpu0", "cpu", "arm", "A78", 8 * GIB, 1e9 / 1.0 / 0.5 / 1e12, "cpu")
CLOUD_GPU = Device("gpu0", "gpu", "nvidia", "A100", 40 * GIB, 1e9 / 0.001 / 0.35 / 1e12, "cuda:0")


def _snapshot(uplink_mbps: float = 8.0) -> ClusterSnapshot:
    warm = frozenset({WHOLE, HEAD, TAIL})
    phone = NodeView(
        "phone-1",
        "device",
        "phone",
        devices=(DeviceView("phone-1", PHONE_CPU, (0.0,)),),
        warm_digests=warm,
    )
    cloud = NodeView(
        "cloud-1",
        "cloud",
        "cloud",
        devices=(DeviceView("cloud-1", CLOUD_GPU, (0.0,)),),
        warm_digests=warm,
    )
    return ClusterSnapshot(nodes=(phone, cloud), network=_network(uplink_mbps))


def _job(digest: str, gflops: float, input_bytes: int, output_bytes: int) -> JobRequest:
    return JobRequest(
        "j", digest, gflops * 1e9, 64 << 20, input_bytes, output_bytes, origin="phone"
    )


# A 6 MB image in, 4 kB out; the first layers (0.02 GFLOP) shrink it to 24 kB, the
# rest is 2 GFLOP.
IMAGE, ACTIVATION, OUT = 6 * MB, 24_000, 4_000
JOB = _job(WHOLE, 2.02, IMAGE, OUT)


def _cut(activation: int = ACTIVATION, head_gflops: float = 0.02) -> SplitCandidate:
    return SplitCandidate(
        "after conv2", _job(HEAD, head_gflops, IMAGE, activation), _job(TAIL, 2.0, activation, OUT)
    )


def test_a_small_activation_over_a_narrow_uplink_splits_phone_then_cloud() -> None:
    choice = choose_split(_snapshot(), JOB, [_cut()], CONFIG)
    assert choice is not None
    assert (choice.head_node, choice.tail_node) == ("phone-1", "cloud-1")
    # Whole on the cloud: 6 MB over 1 MB/s = 6 s; whole on the phone: 2.02 s. Split:
    # 20 ms of head, 24 kB up (20 + 24 ms), 2 ms of tail, 4 kB back (20 + 4 ms).
    assert choice.whole_seconds == pytest.approx(2.02)
    assert choice.predicted_seconds == pytest.approx(0.020 + 0.044 + 0.002 + 0.024, rel=1e-6)
    assert choice.terms["activation"] == pytest.approx(0.044)
    assert "head on phone-1/cpu0, tail on cloud-1/gpu0" in choice.describe()


def test_no_split_when_the_activation_is_as_large_as_the_input() -> None:
    assert choose_split(_snapshot(), JOB, [_cut(activation=IMAGE)], CONFIG) is None


def test_no_split_when_the_link_is_wide_enough_to_send_the_input() -> None:
    # 10 Gb/s: the image is up in 5 ms, the whole job on the cloud takes ~47 ms.
    assert choose_split(_snapshot(uplink_mbps=10_000), JOB, [_cut()], CONFIG) is None


def test_the_best_of_several_cuts_is_chosen() -> None:
    cuts = [_cut(activation=3 * MB), _cut(activation=ACTIVATION), _cut(head_gflops=1.0)]
    choice = choose_split(_snapshot(), JOB, cuts, CONFIG)
    assert choice is not None and choice.index == 1


def test_a_filter_that_keeps_the_tail_off_the_gpu_keeps_the_job_whole() -> None:
    cut = _cut()
    cpu_only = dataclasses.replace(
        cut, tail=dataclasses.replace(cut.tail, device_kinds=frozenset({"cpu"}))
    )
    # The tail can go only to the phone, where the head is: the same device is no split.
    assert choose_split(_snapshot(), JOB, [cpu_only], CONFIG) is None


def test_a_split_barely_sooner_than_one_device_is_not_worth_it() -> None:
    # Whole on the phone 2.02 s; a head of 1.9 GFLOP leaves a split of ~1.99 s: < 10 %.
    slow_head = _cut(head_gflops=1.9)
    assert choose_split(_snapshot(), JOB, [slow_head], CONFIG) is None
    assert choose_split(_snapshot(), JOB, [slow_head], CONFIG, margin=0.0) is not None


def _relayed_snapshot(scheduler_at: str) -> ClusterSnapshot:
    """The same phone and cloud with a scheduler vertex beside one of them: the phone's
    8 Mb/s uplink stays the narrow link either way."""
    near = {"a": "phone", "b": "scheduler", "latency_ms": 1, "bandwidth_mbps": 1000}
    if scheduler_at == "cloud":
        near = {"a": "cloud", "b": "scheduler", "latency_ms": 1, "bandwidth_mbps": 1000}
    network = build_network(
        {
            "sites": ["phone", "cloud", "scheduler"],
            "links": [
                {"a": "phone", "b": "cloud", "latency_ms": 20, "bandwidth_mbps": 8},
                near,
            ],
        }
    )
    return dataclasses.replace(_snapshot(), network=network)


def test_through_a_relay_the_inputs_cross_to_it_first_and_a_split_is_costed_so() -> None:
    relayed = dataclasses.replace(JOB, relay="scheduler")
    cut = _cut()
    stages = dataclasses.replace(
        cut,
        head=dataclasses.replace(cut.head, relay="scheduler"),
        tail=dataclasses.replace(cut.tail, relay="scheduler"),
    )
    # The scheduler beside the phone: the image reaches the phone at LAN speed and only
    # the activation crosses the uplink, as without a relay.
    near = choose_split(_relayed_snapshot("phone"), relayed, [stages], CONFIG)
    assert near is not None and (near.head_node, near.tail_node) == ("phone-1", "cloud-1")
    # The scheduler in the cloud: the image goes up the uplink whatever runs the head,
    # so a head on the phone saves nothing (and costs the image back down): no split.
    far = _relayed_snapshot("cloud")
    assert choose_split(far, relayed, [stages], CONFIG) is None
    assert choose_split(far, JOB, [cut], CONFIG) is not None  # direct, as a lease's calls


def test_a_relay_the_network_lacks_is_no_relay() -> None:
    from anypu.placement import PlanContext

    ctx = PlanContext(_snapshot(), CONFIG)
    direct = ctx.delivery_seconds("phone", IMAGE)
    assert (ctx.delivery_seconds("phone", IMAGE, relay="scheduler") == direct).all()
    relayed = PlanContext(_relayed_snapshot("cloud"), CONFIG)
    cloud = relayed.table.site_index["cloud"]
    phone = relayed.table.site_index["phone"]
    via = relayed.delivery_seconds("phone", IMAGE, relay="scheduler")
    # 6 MB up the 1 MB/s uplink to the scheduler, then back down for the phone itself.
    assert via[phone] == pytest.approx(2 * (0.020 + 0.001 + IMAGE / 1e6), rel=1e-6)
    lan = 0.001 + IMAGE / 125e6  # 1000 Mb/s
    assert via[cloud] == pytest.approx(0.020 + 0.001 + IMAGE / 1e6 + lan, rel=1e-6)
