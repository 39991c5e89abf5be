"""Shared test set-up: markers by folder, and the fixtures the tests share.

Every test under ``tests/integration`` starts real processes and is marked
``integration`` (``pytest -m "not integration"`` runs the in-process suite alone);
``browser`` and ``gpu`` are marked where they are used.  One-line builders of messages,
results and devices are in ``tests/builders.py``; ``fake_cluster`` is a whole cluster
in one thread (``tests/fake_cluster.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_cluster import FakeCluster

_INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    """The real state machines and SQLite store, fake agents, a fake clock."""
    cluster = FakeCluster(tmp_path)
    yield cluster
    cluster.close()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs the command line in-process configures logging: undo it after."""
    import logging

    root, ours = logging.getLogger(), logging.getLogger("anypu")
    saved = (list(root.handlers), root.level, ours.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    ours.setLevel(saved[2])
