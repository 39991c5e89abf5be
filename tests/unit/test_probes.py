"""Bandwidth probes: sized to the link and the budget, never past either, and read right."""

from __future__ import annotations

import math
import time

import pytest

from anypu.agents._probes import (
    MAX_BYTES,
    MIN_BYTES,
    TRANSFER_RTTS,
    BandwidthProber,
    ProbeConfig,
    ProbePlan,
)
from anypu.errors import ConfigError


def test_the_first_probe_is_small_and_later_ones_grow_to_swamp_the_round_trip() -> None:
    plan = ProbePlan(ProbeConfig(interval_s=60, budget_bytes_per_hour=1 << 30))
    assert plan.next_size(rtt_s=0.010) == MIN_BYTES  # nothing known yet
    plan.bandwidth_bps = 10e6
    assert plan.next_size(rtt_s=0.010) == TRANSFER_RTTS * 0.010 * 10e6  # 2 MB, in budget


def test_a_probe_never_exceeds_the_budget_the_link_share_or_the_cap() -> None:
    budget = ProbePlan(ProbeConfig(interval_s=30, budget_bytes_per_hour=36 << 20))
    budget.bandwidth_bps = 1e9
    assert budget.next_size(0.010) == (36 << 20) * 30 // 3600  # 307 KiB a probe
    share = ProbePlan(ProbeConfig(interval_s=10, budget_bytes_per_hour=1 << 40, link_share=0.01))
    share.bandwidth_bps = 1e6  # a slow link: 1 % of 10 s is 100 kB
    assert share.next_size(0.5) == 100_000
    cap = ProbePlan(ProbeConfig(interval_s=3600, budget_bytes_per_hour=1 << 40))
    cap.bandwidth_bps = 1e10
    assert cap.next_size(0.1) == MAX_BYTES
    tiny = ProbePlan(ProbeConfig(interval_s=1, budget_bytes_per_hour=1 << 20))
    assert tiny.next_size(0.01) is None  # 291 bytes a probe: not worth sending


def test_a_timed_probe_is_read_without_its_round_trip() -> None:
    plan = ProbePlan(ProbeConfig())
    assert plan.measured(1_000_000, elapsed_s=0.110, rtt_s=0.010) == pytest.approx(1e7)
    assert plan.bandwidth_bps == pytest.approx(1e7)
    assert plan.measured(1_000, elapsed_s=0.0101, rtt_s=0.010) is None  # all round trip
    assert plan.bandwidth_bps == pytest.approx(1e7)  # kept


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"interval_s": -1}, "interval"),
        ({"budget_bytes_per_hour": -5}, "budget"),
        ({"link_share": 0.9}, "share"),
    ],
)
def test_bad_settings_say_which(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProbeConfig(**fields)


def test_the_prober_sends_what_it_planned_and_reports_what_it_measured() -> None:
    sent: list[int] = []
    reports: list[float] = []

    def send(payload: bytes) -> None:
        sent.append(len(payload))
        time.sleep(len(payload) / 20e6)  # a 20 MB/s link

    prober = BandwidthProber(ProbeConfig(interval_s=60), send, lambda: 0.0, reports.append)
    for _ in range(3):
        prober.probe_once()
    assert sent[0] == MIN_BYTES and sent[1] > sent[0]
    assert prober.sent_bytes == sum(sent)
    assert all(5e6 < bps <= 20e6 for bps in reports)  # a sleep is never shorter than asked
    off = BandwidthProber(ProbeConfig(interval_s=0), send, lambda: 0.0, reports.append)
    off.start()
    assert off._thread is None  # switched off: no thread, no bytes


def test_round_trips_timed_while_a_probe_was_on_the_link_are_known() -> None:
    started = time.time()

    def send(payload: bytes) -> None:
        time.sleep(0.02)

    prober = BandwidthProber(ProbeConfig(interval_s=60), send, lambda: 0.0, lambda _: None)
    assert not prober.overlapped(0.0, math.inf)  # no probe yet
    prober.probe_once()
    ended = time.time()
    assert prober.overlapped(started - 1.0, started + 0.01)  # echo in flight as it began
    assert prober.overlapped(ended - 0.005, ended + 1.0)  # sent before it ended
    assert not prober.overlapped(ended + 0.001, ended + 1.0)  # wholly after
    assert not prober.overlapped(started - 2.0, started - 1.0)  # wholly before
