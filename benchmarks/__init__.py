"""Benchmarks: each ``python -m benchmarks.<name>`` prints its numbers with the machine."""

from __future__ import annotations

import os
import platform

__all__ = ["machine", "percentile"]


def machine() -> str:
    """``machine: x86_64, 2 cores, python 3.11.7, torch 2.13.0+cpu``: what ran the numbers."""
    import torch

    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python"
        f" {platform.python_version()}, torch {torch.__version__}"
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank: what the tables call p99."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
