"""Shared test set-up: markers by folder, and builders the tests share.

Every test under ``tests/integration`` starts real processes and is marked
``integration`` (``pytest -m "not integration"`` runs the in-process suite alone);
``browser`` and ``gpu`` are marked where they are used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
