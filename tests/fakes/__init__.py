"""Fake vendor modules and recorded tool outputs, so device probes are tested without hardware."""

from pathlib import Path

from tests.fakes.pynvml import FakeGpu, make_fake_pynvml

__all__ = ["FAKES_DIR", "FakeGpu", "make_fake_pynvml", "recorded"]

FAKES_DIR = Path(__file__).resolve().parent


def recorded(name: str) -> str:
    """The text of a recorded tool output stored next to this file."""
    return (FAKES_DIR / name).read_text(encoding="utf-8")
