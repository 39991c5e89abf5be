"""The real-GPU checks (``make gpu-check``): every test here is marked ``gpu``, which
``make test`` deselects. Where no NVIDIA GPU answers NVML the run stops with an error
that says so, rather than skipping: a check that did not run must not read as passed."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session", autouse=True)
def _a_real_gpu() -> None:
    from anypu.devices import NvidiaProbe

    probe = NvidiaProbe()
    if not probe.available():
        pytest.exit(
            f"make gpu-check needs an NVIDIA GPU and its driver: {probe.unavailable_reason}",
            returncode=3,
        )
