"""The cloud–edge–device simulation: its inputs checked line by line, and its replay."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from anypu.errors import ConfigError
from anypu.simulations import cloud_edge
from anypu.simulations._edge_replay import POLICIES, calls_of, replay, whole_call_bound
from anypu.simulations._edge_scenario import DEFAULT_TOPOLOGY, DEFAULT_WORKLOAD, load_scenario

TOPOLOGY = """\
device_classes:
  gpu: {kind: gpu, vendor: nvidia, tflops: 10, tflops_fp16: 80, memory_gib: 16, price_per_hour: 1}
  npu: {kind: npu, vendor: mobile, tflops: 0.5, tflops_fp16: 4, memory_gib: 2}
sites:
  - {name: cloud, tier: cloud}
  - {name: edge, tier: edge}
  - {name: phone, tier: device}
links:
  - {a: phone, b: edge, latency_ms: 10, bandwidth_mbps: 50}
  - {a: edge, b: cloud, latency_ms: 10, bandwidth_mbps: 1000}
devices:
  - {site: cloud, class: gpu, count: 4}
  - {site: edge, class: gpu}
  - {site: phone, class: npu}
"""
WORKLOAD = """\
duration_s: 5
models:
  - {name: small, gflops: 0.5, input_kib: 20, output_kib: 2, memory_mib: 10, precision: fp16}
  - {name: big, gflops: 400, input_kib: 100, output_kib: 100, memory_mib: 900, precision: fp16}
streams:
  - {origin: phone, model: small, rate_per_s: 40, deadline_ms: 30}
  - {origin: phone, model: big, rate_per_s: 4, deadline_ms: 200}
"""


def _files(tmp_path: Path, topology: str = TOPOLOGY, workload: str = WORKLOAD) -> tuple[Path, Path]:
    (tmp_path / "t.yaml").write_text(topology)
    (tmp_path / "w.yaml").write_text(workload)
    return tmp_path / "t.yaml", tmp_path / "w.yaml"


@pytest.mark.parametrize(
    ("which", "old", "new", "message"),
    [
        (
            "t",
            "{a: edge, b: cloud,",
            "{a: edge, b: moon,",
            r"t.yaml:10: link names unknown site 'moon'",
        ),
        (
            "t",
            "latency_ms: 10, bandwidth_mbps: 50",
            "latency_ms: -3, bandwidth_mbps: 50",
            r"t.yaml:9: latency_ms must be 0 or more, got -3",
        ),
        (
            "t",
            "{site: edge, class: gpu}",
            "{site: edge, class: tpu9}",
            r"t.yaml:13: unknown device class 'tpu9'",
        ),
        (
            "w",
            "deadline_ms: 30}",
            "deadline_ms: 0}",
            r"w.yaml:6: deadline_ms must be greater than 0, got 0",
        ),
        (
            "w",
            "{origin: phone, model: big",
            "{origin: mars, model: big",
            r"w.yaml:7: stream from unknown site 'mars'",
        ),
    ],
)
def test_a_mistake_in_either_file_names_its_line(
    tmp_path: Path, which: str, old: str, new: str, message: str
) -> None:
    topology, workload = TOPOLOGY, WORKLOAD
    if which == "t":
        assert old in topology
        topology = topology.replace(old, new)
    else:
        assert old in workload
        workload = workload.replace(old, new)
    with pytest.raises(ConfigError, match=message):
        load_scenario(*_files(tmp_path, topology, workload))


def test_a_cycle_of_zero_latency_links_is_refused_at_the_link_closing_it(tmp_path: Path) -> None:
    topology = TOPOLOGY.replace(
        "latency_ms: 10, bandwidth_mbps: 50", "latency_ms: 0, bandwidth_mbps: 50"
    )
    topology = topology.replace(
        "{a: edge, b: cloud, latency_ms: 10", "{a: edge, b: cloud, latency_ms: 0"
    )
    topology = topology.replace(
        "devices:\n", "  - {a: phone, b: cloud, latency_ms: 0, bandwidth_mbps: 5}\ndevices:\n"
    )
    with pytest.raises(
        ConfigError, match=r"t.yaml:11: link phone–cloud closes a cycle of zero-latency"
    ):
        load_scenario(*_files(tmp_path, topology))


def test_the_default_scenario_loads_with_its_sources() -> None:
    scenario = load_scenario(DEFAULT_TOPOLOGY, DEFAULT_WORKLOAD)
    assert {"cloud", "edge", "device"} == set(scenario.tiers.values())
    assert "Narayanan" in DEFAULT_TOPOLOGY.read_text()  # figures say where they come from
    assert sum(len(d) for d in scenario.devices.values()) == 16
    assert "BottleFit" in DEFAULT_WORKLOAD.read_text() and scenario.models["bottlefit"].cuts


def test_the_replay_is_deterministic_and_deadline_aware_placement_leads(tmp_path: Path) -> None:
    scenario = load_scenario(*_files(tmp_path))
    calls = calls_of(scenario, seed=3)
    assert calls == calls_of(scenario, seed=3) and len(calls) > 150
    results = {p: replay(scenario, calls, p, seed=3) for p in POLICIES}
    again = replay(scenario, calls, "anypu", seed=3)
    assert again.latency == results["anypu"].latency
    best_baseline = max(r.attainment() for p, r in results.items() if not p.startswith("anypu"))
    assert results["anypu"].attainment() >= best_baseline
    # the big model cannot be held by the phone (2 GiB), the small one wants it (30 ms)
    assert "device" in results["anypu"].tier and "device" not in results["cloud-only"].tier


# A camera model too heavy for the phone (267 ms) whose 600 KiB frame takes 98 ms up the
# radio, with a cut after its first layers (1 GFLOP) leaving 8 KiB to send.
CAMERA = (
    "  - {name: cam, gflops: 40, input_kib: 600, output_kib: 2, memory_mib: 10,\n"
    "     cuts: [{after: stem, head_gflops: 1, activation_kib: 8}]}\n"
)


def test_a_split_meets_deadlines_neither_side_alone_can(tmp_path: Path) -> None:
    workload = WORKLOAD.replace("streams:\n", CAMERA + "streams:\n")
    workload += "  - {origin: phone, model: cam, rate_per_s: 5, deadline_ms: 80}\n"
    scenario = load_scenario(*_files(tmp_path, workload=workload))
    calls = [c for c in calls_of(scenario, seed=1) if c.model == "cam"]
    whole, split = (replay(scenario, calls, p, seed=1) for p in ("anypu", "anypu+split"))
    assert whole.attainment() == 0.0 and split.attainment() > 0.9
    assert set(split.tier) <= {"device+edge", "device+cloud"}  # head on the phone
    assert whole_call_bound(scenario, calls, seed=1).attainment() == 0.0  # nor any whole


def test_no_whole_call_policy_beats_the_bound_and_idle_calls_reach_it(tmp_path: Path) -> None:
    scenario = load_scenario(*_files(tmp_path))
    calls = calls_of(scenario, seed=2)
    bound = whole_call_bound(scenario, calls, seed=2)
    for policy in POLICIES:
        if policy != "anypu+split":
            assert replay(scenario, calls, policy, seed=2).attainment() <= bound.attainment()
    # Calls a second apart never queue: a call the bound says cannot be met is missed by
    # every policy, and anypu meets nearly all it can (noise may undo a prediction).
    sparse = [replace(c, at=float(i)) for i, c in enumerate(calls[:40])]
    alone = whole_call_bound(scenario, sparse, seed=2)
    for policy in ("anypu", "nearest-first"):
        met = replay(scenario, sparse, policy, seed=2).met
        assert all(can or not did for did, can in zip(met, alone.met, strict=True))
    assert sum(replay(scenario, sparse, "anypu", seed=2).met) >= 0.9 * sum(alone.met)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        ("{after: stem, head_gflops: 40, activation_kib: 8}", r"w.yaml:6: .*must be less than"),
        ("{after: stem, head_gflops: 1, activation_kib: 0}", r"w.yaml:6: .*activation_kib must"),
        ("{head_gflops: 1, activation_kib: 8}", r"w.yaml:6: .*'after'"),
    ],
)
def test_a_cut_that_cannot_be_is_refused_at_its_line(
    tmp_path: Path, cut: str, message: str
) -> None:
    camera = CAMERA.replace("{after: stem, head_gflops: 1, activation_kib: 8}", cut)
    workload = WORKLOAD.replace("streams:\n", camera + "streams:\n")
    with pytest.raises(ConfigError, match=message):
        load_scenario(*_files(tmp_path, workload=workload))


def test_the_command_writes_its_table_csv_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topology, workload = _files(tmp_path)
    out = tmp_path / "out"
    code = cloud_edge.main(
        [
            "--topology",
            str(topology),
            "--workload",
            str(workload),
            "--seeds",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "| anypu |" in printed.out and "| ray-hybrid |" in printed.out
    assert (out / "cloud_edge.csv").read_text().count("\n") == 1 + len(POLICIES)
    assert (out / "cloud_edge.png").stat().st_size > 1000
    assert "seed 1 [" in printed.err  # the progress bar
    bad = cloud_edge.main(["--workload", str(tmp_path / "missing.yaml")])
    assert bad == 2 and "cannot read" in capsys.readouterr().err
