"""Host-memory jobs capped by cgroup v2, where the agent may create cgroups.

A worker running jobs on host memory (a CPU slice, or a simulated device) caps each job
at its share with ``RLIMIT_DATA`` (``_runner``), which counts the process's private
writable mappings only. Where the agent runs in a cgroup v2 hierarchy it may write (a
systemd unit with ``Delegate=yes``, a container with its own cgroup namespace, a user
session with delegation), each worker gets a cgroup of its own as well, which counts
everything the kernel charges to it (anonymous memory, page cache, shared memory, what
child processes use) and its CPU time:

- ``memory.max``: what the worker held when it became ready plus the slice's memory (a
  fixed slice), raised before each job to what the worker holds plus the job's
  reservation (a seat of a shared device); ``memory.swap.max`` 0, so the cap is not a
  slower road to the same memory;
- ``cpu.max``: the slice's threads × the period, so a slice uses the cores it is
  given and no more, whatever its model's threads do;
- when the kernel stops a worker for going over (``memory.events``' ``oom_kill``), its
  job fails as ``MemoryExceeded`` naming the cap, and no other worker is touched.

Setting up (``host_cgroups``): the agent finds the cgroup2 mount (``/proc/self/mounts``)
and its own cgroup (``/proc/self/cgroup``'s ``0::`` line), moves itself into a leaf
``anypu-agent`` there (cgroup v2 lets a cgroup hand controllers to children only when it
holds no process itself), enables ``+cpu +memory`` for the children, and creates one
``anypu-<device>-<slice>`` cgroup per process worker. Any step refused (no cgroup v2, a
read-only hierarchy, controllers not delegated, other processes in its cgroup) is logged
once with the reason and leaves the rlimits as the only cap.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["HostCgroups", "WorkerCgroup", "host_cgroups"]

log = logging.getLogger("anypu.agent")

#: ``cpu.max``'s period, in microseconds (the kernel's default).
CPU_PERIOD_US = 100_000
_CONTROLLERS = ("cpu", "memory")


class WorkerCgroup:
    """One worker process's cgroup: its caps, its processes and its OOM kills."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._oom_kills_seen = 0

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def add(self, pid: int) -> None:
        """Move process ``pid`` (a worker just started) into this cgroup."""
        self._write("cgroup.procs", str(pid))
        self._oom_kills_seen = self.oom_kills()

    def limit_cpu(self, threads: int) -> None:
        self._write("cpu.max", f"{max(1, threads) * CPU_PERIOD_US} {CPU_PERIOD_US}")

    def limit_memory_above_current(self, memory_bytes: int) -> int:
        """Cap the worker at what it holds now plus ``memory_bytes``; the cap set."""
        cap = self.memory_current() + max(0, memory_bytes)
        self._write("memory.max", str(cap))
        if (self.path / "memory.swap.max").exists():
            self._write("memory.swap.max", "0")
        return cap

    def memory_current(self) -> int:
        text = self._read("memory.current").strip()
        return int(text) if text.isdigit() else 0

    def memory_max(self) -> int:
        text = self._read("memory.max").strip()
        return int(text) if text.isdigit() else 0

    def peak(self) -> int:
        """The most it held (``memory.peak``, Linux 5.19+), else its cap."""
        text = self._read("memory.peak").strip()
        return int(text) if text.isdigit() else self.memory_max()

    def oom_kills(self) -> int:
        for line in self._read("memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def killed_for_memory(self) -> bool:
        """Whether the kernel killed a process here for memory since the last ask."""
        kills = self.oom_kills()
        killed, self._oom_kills_seen = kills > self._oom_kills_seen, kills
        return killed

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass  # a process still in it; the kernel removes nothing for us


class HostCgroups:
    """The agent's delegated cgroup, in which it creates one cgroup per worker."""

    def __init__(self, own: Path) -> None:
        self.own = own

    def worker(self, device_id: str, slice_index: int) -> WorkerCgroup:
        path = self.own / f"anypu-{device_id}-{slice_index}"
        path.mkdir(exist_ok=True)
        return WorkerCgroup(path)


def _cgroup2_mount(mounts: str) -> Path | None:
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def _own_cgroup(cgroup: str) -> str | None:
    for line in cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return None


def _set_up(mount: Path, relative: str, pid: int) -> Path:
    """The agent's cgroup, with ``cpu`` and ``memory`` handed to its children; raises
    ``OSError`` or ``ValueError`` saying what was refused."""
    own = mount / relative.lstrip("/")
    available = (own / "cgroup.controllers").read_text().split()
    missing = [c for c in _CONTROLLERS if c not in available]
    if missing:
        raise ValueError(f"controller(s) {', '.join(missing)} not delegated to {own}")
    if not os.access(own, os.W_OK):
        raise PermissionError(f"{own} is not writable by this user")
    enabled = (own / "cgroup.subtree_control").read_text().split()
    if all(c in enabled for c in _CONTROLLERS):
        return own  # done before (an agent restarted in place)
    leaf = own / "anypu-agent"
    leaf.mkdir(exist_ok=True)
    (leaf / "cgroup.procs").write_text(str(pid))
    others = (own / "cgroup.procs").read_text().split()
    if others:
        raise ValueError(
            f"{own} holds other processes ({', '.join(others[:5])}), so it cannot hand"
            " controllers to children; run the agent in a cgroup of its own"
        )
    (own / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in _CONTROLLERS))
    return own


def host_cgroups(
    proc: Path = Path("/proc/self"), pid: int | None = None
) -> tuple[HostCgroups | None, str]:
    """This agent's cgroups, or None; and a line for the log saying which cap applies."""
    try:
        mount = _cgroup2_mount((proc / "mounts").read_text())
        relative = _own_cgroup((proc / "cgroup").read_text())
    except OSError as error:
        return None, f"cgroups unreadable ({error})"
    fallback = "host-memory jobs are capped by RLIMIT_DATA only"
    if mount is None or relative is None:
        return None, f"cgroup v2 is not mounted here: {fallback}"
    try:
        own = _set_up(mount, relative, os.getpid() if pid is None else pid)
    except (OSError, ValueError) as error:
        return None, f"cgroup v2 cannot be used ({error}): {fallback}"
    return HostCgroups(own), f"host-memory workers get cgroups of their own under {own}"
