"""The agent's model artifacts on disk, bounded in size, least recently used first out.

An artifact is downloaded once per node and loaded by the slices that run it; without a
bound, a node that serves many models fills its disk. After each download the cache
trims itself to ``max_bytes``, deleting the artifacts used longest ago (a file's mtime
is its last use: a launch that finds it touches it) except those a worker holds warm,
those being fetched, and any used in the last minute (a launch may be about to load it).
A deleted artifact is fetched again from the scheduler when a job needs it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from anypu.devices import format_bytes

__all__ = ["DEFAULT_CACHE_BYTES", "ArtifactCache"]

DEFAULT_CACHE_BYTES = 10 << 30
_RECENT_S = 60.0
log = logging.getLogger("anypu.agent")


class ArtifactCache:
    def __init__(self, folder: Path, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def path(self, digest: str) -> Path:
        return self.folder / digest

    def has(self, digest: str) -> bool:
        """Whether the artifact is here; asking is a use (it moves to the back of the line)."""
        try:
            os.utime(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    def bytes(self) -> int:
        return sum(size for _, _, size in self._files())

    def trim(self, keep: Iterable[str] = ()) -> int:
        """Delete least recently used artifacts until the cache fits: bytes freed."""
        spare = set(keep)
        recent = time.time() - _RECENT_S
        with self._lock:
            files = sorted(self._files(), key=lambda f: f[1])  # oldest use first
            total = sum(size for _, _, size in files)
            freed = 0
            for path, used, size in files:
                if total - freed <= self.max_bytes:
                    break
                if path.name in spare or used >= recent:
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                freed += size
                log.info(
                    "deleted cached model %s… (%s, unused since %s): the cache holds at most %s",
                    path.name[:12],
                    format_bytes(size),
                    time.strftime("%H:%M:%S", time.localtime(used)),
                    format_bytes(self.max_bytes),
                )
        if total - freed > self.max_bytes:
            log.warning(
                "the model cache holds %s, over its %s: every model in it is in use",
                format_bytes(total - freed),
                format_bytes(self.max_bytes),
            )
        return freed

    def _files(self) -> list[tuple[Path, float, int]]:
        found = []
        for path in self.folder.iterdir():
            if path.suffix == ".part":
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((path, stat.st_mtime, stat.st_size))
        return found
