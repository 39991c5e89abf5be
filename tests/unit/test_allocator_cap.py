"""A job on a seat is capped by its vendor's torch backend allocator, for every vendor
whose backend has ``set_per_process_memory_fraction``: faked at the torch boundary
(``torch.mlu``, ``torch.npu``… are what the vendors' extensions add)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from anypu.devices import Device, apply_job_limit, with_shares

GIB = 1 << 30


class FakeBackend:
    def __init__(self, allocated: int, available: bool = True) -> None:
        self.allocated, self.available = allocated, available
        self.set: list[tuple[float, str]] = []

    def is_available(self) -> bool:
        return self.available

    def memory_allocated(self, index: int) -> int:
        return self.allocated

    def set_per_process_memory_fraction(self, fraction: float, device: str) -> None:
        self.set.append((fraction, device))


@pytest.mark.parametrize(
    ("kind", "vendor", "backend"),
    [
        ("npu", "cambricon", "mlu"),
        ("npu", "huawei", "npu"),
        ("gpu", "amd", "cuda"),
        ("gpu", "mthreads", "musa"),
        ("gpu", "intel", "xpu"),
        ("gpu", "nvidia", "cuda"),
    ],
)
def test_a_seat_caps_its_job_at_what_it_holds_plus_the_reservation(
    monkeypatch: pytest.MonkeyPatch, kind: str, vendor: str, backend: str
) -> None:
    fake = FakeBackend(allocated=2 * GIB)
    monkeypatch.setattr(torch, backend, fake, raising=False)
    device = with_shares(Device(f"{kind}0", kind, vendor, "X", 32 * GIB, 100.0, f"{backend}:0"), 4)
    assert apply_job_limit(device, 6 * GIB) == "memory fraction 0.2500"
    assert fake.set == [(0.25, f"{backend}:0")]


def test_no_backend_or_an_unavailable_one_caps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    device = with_shares(Device("npu0", "npu", "cambricon", "X", 32 * GIB, 100.0, "mlu:0"), 4)
    monkeypatch.delattr(torch, "mlu", raising=False)
    assert apply_job_limit(device, GIB) == ""
    fake = FakeBackend(0, available=False)
    monkeypatch.setattr(torch, "mlu", fake, raising=False)
    assert apply_job_limit(device, GIB) == "" and fake.set == []
    monkeypatch.setattr(torch, "mlu", SimpleNamespace(), raising=False)  # no such cap
    assert apply_job_limit(device, GIB) == ""
