"""``anypu agent --slices``: real accelerators cut into slices that run jobs side by side."""

from __future__ import annotations

import dataclasses

import pytest

from anypu.agents._commands import apply_slicing
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
    assert by_id["gpu0"].sharing == "mps"  # NVIDIA slices share through MPS
    assert by_id["gpu1"].slices == 2 and by_id["npu0"].slices == 1
    assert by_id["cpu0"] is CPU  # untouched


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
