"""The committed generated code matches the .proto, and only one module imports it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from anypu.devices import Device
from anypu.protos import convert, generate
from anypu.protos import messages as m
from tests.builders import failed, ran

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_proto(tmp_path):
    # In a subprocess: grpc_tools' protoc aborts when imported beside a live protobuf runtime.
    script = "import sys; from pathlib import Path; from anypu.protos import generate; "
    script += "generate.generate(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120)
    for name in generate.GENERATED:
        path = tmp_path / name
        committed = ROOT / "protos" / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.name} is stale: run `make protos` and commit the result"
        )


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {Requirement(spec).name: Requirement(spec) for spec in specs}


def _floor(requirement: Requirement) -> Version:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    assert floors, f"{requirement} has no floor"
    return max(floors)


def test_dependency_floors_admit_only_runtimes_the_generated_code_accepts():
    # The generated modules refuse, at import, a runtime older than what generated them; a
    # resolver must never be allowed to pick one.
    pb2 = (ROOT / "protos" / "anypu_v1_pb2.py").read_text()
    grpc_code = (ROOT / "protos" / "anypu_v1_pb2_grpc.py").read_text()
    protobuf_made = Version(re.search(r"# Protobuf Python Version: ([\d.]+)", pb2).group(1))
    grpc_made = Version(re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_code).group(1))
    requirements = _pyproject_requirements()
    assert _floor(requirements["protobuf"]) >= protobuf_made
    assert Version(f"{protobuf_made.major + 1}") not in requirements["protobuf"].specifier
    assert _floor(requirements["grpcio"]) >= grpc_made
    # The generator is pinned to the version that made the committed code (``make protos``).
    assert str(requirements["grpcio-tools"].specifier) == f"=={grpc_made}"


def test_only_the_conversion_modules_import_pb2():
    # anypu's messages through protos/convert.py; the inference protocol's through its codec.
    allowed = {ROOT / "protos" / "convert.py", ROOT / "anypu" / "_oip_grpc.py"}
    pattern = re.compile(
        r"import\s+anypu_v1_pb2\b|anypu_v1_pb2\s+import|\bimport .*_pb2\b(?!_grpc)"
    )
    offenders = []
    for path in ROOT.rglob("*.py"):
        if {".venv", "build"} & set(path.relative_to(ROOT).parts) or path.name.endswith(
            ("_pb2.py", "_pb2_grpc.py")
        ):
            continue
        ours = [line for line in path.read_text().splitlines() if "tritonclient" not in line]
        if pattern.search("\n".join(ours)) and path not in allowed:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


DEVICE = Device("gpu0", "gpu", "nvidia", "A100", 40 << 30, 156.0, "cuda:0", False, 2, 1, "mps")


@pytest.mark.parametrize(
    "message",
    [
        m.Join(
            1, "T", "edge-1", "edge", "shop", {"zone": "a"}, (DEVICE,), ("d1",), "0.1", (("j", 2),)
        ),
        m.Heartbeat(1.5, (m.DeviceUsage("gpu0", 0.5, 10, 1),), ("d",), 1),
        m.Heartbeat(2.5, rtt_s=0.004, wants_echo=True),
        m.JobStarted("j", 1),
        m.JobResult("j", 1, failed(traceback="tb"), b"", "n", "gpu0"),
        m.Join(1, "T", "edge-2", "edge", devices=(DEVICE,), direct_address="10.0.0.7:7080"),
        m.LeasedRuns(
            (
                m.LeasedRun("lease-1", "j1", 1.0, 1.5, ran(load_seconds=0.1, run_seconds=0.4)),
                m.LeasedRun("lease-1", "j2", 2.0, 2.1, failed(m.FailureCode.WORKER_DIED, "msg")),
            )
        ),
    ],
)
def test_agent_messages_round_trip(message):
    assert convert.agent_message_from_pb(convert.agent_message_to_pb(message)) == message


@pytest.mark.parametrize(
    "message",
    [
        m.JoinAck("n", 0.5, 2.5, 3, 1),
        m.Launch("j", 2, "d", "gpu0", 1, b"x", "", 9.0),
        m.Cancel("j", 2, "r"),
        m.LeaseGranted(m.Lease("lease-1", "n", "gpu0", 1, "d" * 64, "10.0.0.7:7080")),
        m.LeaseRevoked("lease-1", "idle"),
        m.HeartbeatEcho(2.5),
        m.HeartbeatEcho(2.5, held_s=0.0003),
    ],
)
def test_scheduler_messages_round_trip(message):
    assert convert.scheduler_message_from_pb(convert.scheduler_message_to_pb(message)) == message


def test_job_and_node_info_round_trip():
    job = m.JobInfo(
        "j",
        "pending",
        placement=m.PlacementInfo("n", "gpu0", 0, 1.0, {"compute": 0.5}),
        pending_reasons={"n2": "too small"},
    )
    assert convert.job_info_from_pb(convert.job_info_to_pb(job)) == job
    node = m.NodeInfo("n", "cloud", "dc", "ready", {"a": "b"}, (DEVICE,), (), ("d",), 0.5, 1, 2)
    assert convert.node_info_from_pb(convert.node_info_to_pb(node)) == node
    measured = dataclasses.replace(node, rtt_p50_s=0.002, rtt_p95_s=0.009, rtt_age_s=0.4)
    assert convert.node_info_from_pb(convert.node_info_to_pb(measured)) == measured
    submit = m.SubmitRequest("d", b"in", flops=5.0, tiers=("edge",), wait=True, max_retries=2)
    assert convert.submit_request_from_pb(convert.submit_request_to_pb(submit)) == submit
    leasing = m.SubmitRequest("d", b"in", wait=True, lease=True)
    assert convert.submit_request_from_pb(convert.submit_request_to_pb(leasing)) == leasing


def test_leases_and_direct_calls_round_trip():
    lease = m.Lease("lease-1", "n", "gpu0", 1, "d" * 64, "10.0.0.7:7080")
    info = m.JobInfo("j", "succeeded")
    assert convert.submit_response_lease(convert.submit_response(info, b"o", lease)) == lease
    assert convert.submit_response_lease(convert.submit_response(info, b"o")) is None
    request = convert.direct_run_request("lease-1", b"in")
    assert (request.lease_id, request.inputs) == ("lease-1", b"in")
    result = m.JobResult("j", 1, ran(run_seconds=0.2), b"out", node_id="n", device_id="gpu0")
    assert convert.direct_run_result(convert.direct_run_response(result)) == (result, "")
    redirected = convert.direct_run_response(result, "127.0.0.1:5")
    assert convert.direct_run_result(redirected) == (result, "127.0.0.1:5")
    assert convert.direct_run_result(convert.direct_run_response(None)) == (None, "")


def test_fields_the_wire_does_not_carry_keep_their_defaults():
    join = m.Join(1, "T", "edge-1", "edge", devices=(DEVICE,), direct_runs=True)
    assert not convert.agent_message_from_pb(convert.agent_message_to_pb(join)).direct_runs


def test_an_empty_agent_message_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        convert.agent_message_from_pb(convert.pb.AgentMessage())
