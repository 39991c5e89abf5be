"""A GPU in MIG mode offers its MIG devices, each a device of its own, through the real
``NvidiaProbe`` against the fake ``pynvml``. Names, UUIDs and the listing's shape follow
real ``nvidia-smi -L`` output of an A100-SXM4-40GB cut into 1g.5gb instances (recorded in
hashicorp/nomad-device-nvidia pull request 53) and NVML's MIG calls
(``nvmlDeviceGetMaxMigDeviceCount``, ``nvmlDeviceGetMigDeviceHandleByIndex``)."""

from __future__ import annotations

import sys

import pytest

from anypu.devices import NvidiaProbe, slice_environment, with_shares
from tests.fakes import FakeGpu, make_fake_pynvml

GIB = 1 << 30
MIB = 1 << 20


def _mig(index: int, profile: str, memory: int, uuid: str) -> FakeGpu:
    return FakeGpu(
        name=f"NVIDIA A100-SXM4-40GB MIG {profile}",
        memory_total=memory,
        uuid=uuid,
        unsupported={"nvmlDeviceGetUtilizationRates"},  # NVML has none for a MIG device
    )


def _gpus() -> list[FakeGpu]:
    plain = FakeGpu(
        "NVIDIA A100-SXM4-40GB", 40 * GIB, uuid="GPU-d8d7e984-7a52-6ad0-676c-222f4be482b9"
    )
    cut = FakeGpu(
        "NVIDIA A100-SXM4-40GB",
        40 * GIB,
        uuid="GPU-6109dd5c-d378-24ee-f344-79b537574ea6",
        mig_mode=(1, 1),
        mig_devices=[
            _mig(0, "3g.20gb", 19968 * MIB, "MIG-8c4c5a27-e508-5556-b2ea-7e549465741e"),
            None,  # an index with no instance
            _mig(2, "1g.5gb", 4864 * MIB, "MIG-1d89abd8-d10a-5361-bd06-77a807048472"),
        ],
    )
    return [plain, cut]


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> NvidiaProbe:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = make_fake_pynvml(_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return NvidiaProbe()


def test_mig_devices_are_offered_as_devices_of_their_own(probe: NvidiaProbe) -> None:
    devices = {d.device_id: d for d in probe.probe()}
    assert sorted(devices) == ["gpu0", "gpu1-mig0", "gpu1-mig2"]  # the cut GPU itself: not
    big, small = devices["gpu1-mig0"], devices["gpu1-mig2"]
    assert big.model == "A100-SXM4-40GB MIG 3g.20gb" and big.memory_bytes == 19968 * MIB
    assert big.tflops == pytest.approx(19.5 * 3 / 7, rel=1e-3)  # 3 of 7 compute slices
    assert small.tflops == pytest.approx(19.5 / 7, rel=1e-3)
    assert float(big.extra["tflops_fp16"]) == pytest.approx(312 * 3 / 7, rel=1e-3)
    assert big.extra["mig_profile"] == "3g.20gb" and big.extra["mig_parent"] == "gpu1"
    # A worker on it sees only that instance, by its MIG UUID.
    env = slice_environment(with_shares(small, 2), 1)
    assert env["CUDA_VISIBLE_DEVICES"] == "MIG-1d89abd8-d10a-5361-bd06-77a807048472"
    assert slice_environment(devices["gpu0"], 0)["CUDA_VISIBLE_DEVICES"] == "0"


def test_a_mig_device_is_read_on_its_own_handle(probe: NvidiaProbe) -> None:
    probe.probe()
    fake = sys.modules["pynvml"]
    instance = fake.fake_gpus[1].mig_devices[2]
    instance.memory_used, instance.processes = 3 * GIB, {4242: 3 * GIB}
    readings = probe.readings()
    small = readings["gpu1-mig2"]
    assert small.memory_used_bytes == 3 * GIB and small.process_memory == {4242: 3 * GIB}
    assert small.utilisation is None  # not reported, not made up
    assert readings["gpu0"].utilisation == 0.0


def test_a_gpu_in_mig_mode_without_instances_offers_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    empty = FakeGpu("NVIDIA A100-SXM4-40GB", 40 * GIB, mig_mode=(1, 1), mig_devices=[])
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([empty]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level("WARNING"):
        assert NvidiaProbe().probe() == []
    assert "MIG mode with no MIG device created" in caplog.text


def test_compute_instances_share_their_gpu_instance_s_memory_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def ci(uuid: str) -> FakeGpu:
        gpu = _mig(0, "1c.3g.20gb", 19968 * MIB, uuid)
        gpu.gpu_instance_id = 1
        return gpu

    cut = FakeGpu(
        "NVIDIA A100-SXM4-40GB",
        40 * GIB,
        mig_mode=(1, 1),
        mig_devices=[
            ci("MIG-aaaaaaaa-0000-0000-0000-000000000001"),
            ci("MIG-aaaaaaaa-0000-0000-0000-000000000002"),
        ],
    )
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([cut]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (only,) = NvidiaProbe().probe()
    assert only.extra["uuid"].endswith("0001") and only.extra["mig_profile"] == "1c.3g.20gb"
    assert only.tflops == pytest.approx(19.5 / 7, rel=1e-3)  # 1 compute slice of 7


def test_an_agent_limited_to_one_mig_device_offers_that_one(
    probe: NvidiaProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1d89abd8-d10a-5361-bd06-77a807048472")
    (only,) = probe.probe()
    assert only.device_id == "gpu0-mig2" and only.extra["mig_profile"] == "1g.5gb"
