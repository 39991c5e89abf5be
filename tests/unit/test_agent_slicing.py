"""``anypu agent --slices`` and ``--seats``: real accelerators shared by demand-sized
reservations (the default) or cut into fixed slices."""

from __future__ import annotations

import dataclasses

import pytest

from anypu.agents._commands import DEFAULT_SEATS, apply_slicing
from anypu.devices import Device
from anypu.errors import AnypuError

GIB = 1 << 30
GPU0 = Device("gpu0", "gpu", "nvidia", "A100", 40 * GIB, 19.5, "cuda:0", extra={"index": "0"})
GPU1 = dataclasses.replace(GPU0, device_id="gpu1", torch_device="cuda:1", extra={"index": "1"})
NPU = Device("npu0", "npu", "huawei", "Ascend910B3", 64 * GIB, 313, "npu:0", extra={"index": "0"})
CPU = Device("cpu0", "cpu", "amd", "EPYC", 64 * GIB, 1.0, "cpu", threads=8)


def test_a_kind_is_sliced_and_a_device_named_by_id_wins() -> None:
    sliced = apply_slicing([CPU, GPU0, GPU1, NPU], ["gpu=4", "gpu1=2"])
    by_id = {d.device_id: d for d in sliced}
    assert by_id["gpu0"].slices == 4 and by_id["gpu0"].slice_memory_bytes == 10 * GIB
    assert by_id["gpu0"].sharing == "time"  # through MPS only where a daemon runs
    assert by_id["gpu1"].slices == 2 and not by_id["gpu1"].shared
    assert by_id["cpu0"] is CPU  # untouched
    # An accelerator neither flag names is offered whole, shared by reservations.
    assert by_id["npu0"].shared and by_id["npu0"].slices == DEFAULT_SEATS
    assert by_id["npu0"].slice_memory_bytes == 64 * GIB


def test_seats_share_a_device_whole_and_simulated_devices_keep_their_declaration() -> None:
    simulated = dataclasses.replace(GPU1, simulated=True)
    (gpu0, gpu1) = apply_slicing([GPU0, simulated], [], ["gpu0=8"])
    assert gpu0.shared and gpu0.slices == 8 and gpu0.slice_memory_bytes == 40 * GIB
    assert gpu1 is simulated
    assert "shared (8 seats)" in gpu0.describe()


@pytest.mark.parametrize(
    ("slices", "seats", "message"),
    [
        (["gpu=2"], ["gpu=4"], "named by both --slices and --seats"),
        ([], ["cpu=2"], "a CPU is shared by its threads; cut it with --slices cpu=N"),
        ([], ["gpu=x"], "--seats 'gpu=x' must look like KIND=N or DEVICE=N"),
    ],
)
def test_conflicting_or_malformed_seats_say_what_to_do(
    slices: list[str], seats: list[str], message: str
) -> None:
    with pytest.raises(AnypuError, match=message):
        apply_slicing([CPU, GPU0], slices, seats)


def test_cpu_threads_are_divided_among_its_slices() -> None:
    (cpu,) = apply_slicing([CPU], ["cpu=4"])
    assert (cpu.slices, cpu.threads) == (4, 2)


@pytest.mark.parametrize("item", ["gpu", "gpu=0", "gpu=65", "=2", "gpu=two"])
def test_a_malformed_slicing_says_how_to_write_it(item: str) -> None:
    with pytest.raises(AnypuError, match="must look like KIND=N or DEVICE=N"):
        apply_slicing([GPU0], [item])


def test_slicing_what_the_node_lacks_lists_what_it_has() -> None:
    with pytest.raises(AnypuError, match=r"names \['npu'\].*gpu0 \(gpu\)"):
        apply_slicing([GPU0], ["npu=2"])
