"""The agent's model cache stays under its size, least recently used first out."""

from __future__ import annotations

import os
import time
from pathlib import Path

from anypu.agents._cache import ArtifactCache


def _artifact(cache: ArtifactCache, name: str, size: int, used_ago: float) -> Path:
    path = cache.path(name)
    path.write_bytes(b"x" * size)
    then = time.time() - used_ago
    os.utime(path, (then, then))
    return path


def test_trimming_deletes_the_least_recently_used_until_it_fits(tmp_path):
    cache = ArtifactCache(tmp_path, max_bytes=250)
    oldest = _artifact(cache, "a" * 64, 100, used_ago=3000)
    middle = _artifact(cache, "b" * 64, 100, used_ago=2000)
    newest = _artifact(cache, "c" * 64, 100, used_ago=1000)
    assert cache.trim() == 100
    assert not oldest.exists() and middle.exists() and newest.exists()
    assert cache.bytes() == 200


def test_warm_fetching_and_just_used_artifacts_are_spared(tmp_path):
    cache = ArtifactCache(tmp_path, max_bytes=100)
    warm = _artifact(cache, "a" * 64, 100, used_ago=3000)
    just_used = _artifact(cache, "b" * 64, 100, used_ago=5)
    cold = _artifact(cache, "c" * 64, 100, used_ago=2000)
    (tmp_path / ("d" * 64 + ".part")).write_bytes(b"x" * 500)  # a download in progress
    cache.trim(keep={"a" * 64})
    assert warm.exists() and just_used.exists() and not cold.exists()


def test_finding_an_artifact_counts_as_using_it(tmp_path):
    cache = ArtifactCache(tmp_path, max_bytes=100)
    first = _artifact(cache, "a" * 64, 100, used_ago=3000)
    second = _artifact(cache, "b" * 64, 100, used_ago=2000)
    assert cache.has("a" * 64) and not cache.has("e" * 64)
    cache.trim()
    assert first.exists() and not second.exists()
